"""Helpers shared by several checks (not a check: modules starting with ``_`` are not loaded)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.pss.pod import Container, boolean, mapping, mappings, string


def host_flag(ctx: CheckContext, field: str) -> list[str]:
    """A message when ``spec.<field>`` is true, whatever the pod's securityContext holds (the
    original only looked when ``spec.securityContext`` was set)."""
    if boolean(ctx.pod.spec, field, "spec") is True:
        return [f"spec.{field}=true is not allowed"]
    return []


def effective(ctx: CheckContext, c: Container, field: str) -> Any:
    """The container's securityContext value, else the pod's (pod-level fields only)."""
    value = c.sc.get(field)
    return value if value is not None else ctx.pod.sc.get(field)


def effective_bool(ctx: CheckContext, c: Container, field: str) -> bool | None:
    value = boolean(c.sc, field, c.sc_path)
    return value if value is not None else boolean(ctx.pod.sc, field, "spec.securityContext")


def host_paths(ctx: CheckContext) -> Iterator[tuple[str, str]]:
    """(volume name, hostPath path) of every hostPath volume."""
    for index, volume in enumerate(mappings(ctx.pod.spec, "volumes", "spec")):
        where = f"spec.volumes[{index}]"
        host = volume.get("hostPath")
        if host is None:
            continue
        path = string(mapping(volume, "hostPath", where), "path", f"{where}.hostPath") or ""
        yield string(volume, "name", where) or f"#{index}", path
