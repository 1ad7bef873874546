"""Baseline: seccomp must not be switched off. Before v1.19 through the alpha annotations (pod and
per container: ``runtime/default``, ``docker/default`` or ``localhost/…``), from v1.19 through
``securityContext.seccompProfile.type`` (RuntimeDefault or Localhost when set)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcdr_admission.pss.describe import plural, quoted, setters, sorted_unique
from qcdr_admission.pss.pod import Pod, present, string
from qcdr_admission.pss.registry import Check, Revision, register

POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"
VALID_TYPES = frozenset({"RuntimeDefault", "Localhost"})


def valid_annotation(value: str) -> bool:
    return value in ("runtime/default", "docker/default") or value.startswith("localhost/")


def seccomp_baseline_v1_0(pod: Pod) -> str | None:
    annotations = pod.annotations
    forbidden: set[str] = set()
    value = annotations.get(POD_ANNOTATION)
    if value is not None and not valid_annotation(value):
        forbidden.add(f'{POD_ANNOTATION}="{value}"')
    for c in pod.containers:
        key = CONTAINER_ANNOTATION + c.name
        value = annotations.get(key)
        if value is not None and not valid_annotation(value):
            forbidden.add(f'{key}="{value}"')
    if not forbidden:
        return None
    return (
        f"seccomp must not be unconfined: forbidden "
        f"{plural(len(forbidden), 'annotation', 'annotations')} {', '.join(sorted(forbidden))}"
    )


def seccomp_type(sc: Mapping[str, Any], where: str) -> str | None:
    """The ``seccompProfile.type`` of a securityContext, ``""`` when the profile has none, ``None``
    when no profile is set."""
    profile = present(sc, "seccompProfile", where)
    if profile is None:
        return None
    return string(profile, "type", f"{where}.seccompProfile") or ""


def seccomp_baseline_v1_19(pod: Pod) -> str | None:
    values: list[str] = []
    pod_type = seccomp_type(pod.sc, "spec.securityContext")
    pod_bad = False
    if pod_type is not None and pod_type not in VALID_TYPES:
        pod_bad = True
        values.append(pod_type)
    names = []
    for c in pod.containers:
        kind = seccomp_type(c.sc, c.sc_path)
        if kind is not None and kind not in VALID_TYPES:
            names.append(c.name)
            values.append(kind)
    if not pod_bad and not names:
        return None
    return (
        f"{setters(pod_bad, names)} must not set securityContext.seccompProfile.type to "
        f"{quoted(sorted_unique(values))}"
    )


register(
    Check(
        "seccompProfile_baseline",
        "baseline",
        (Revision(0, seccomp_baseline_v1_0), Revision(19, seccomp_baseline_v1_19)),
    )
)
