"""Init and regular containers set limits for the listed resources (default cpu and memory).
Ephemeral containers cannot have resources, so they are not judged."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.registry import ListConfig, PolicyCheck, register
from qcdr_admission.pss.pod import mapping


class Config(ListConfig):
    values: tuple[str, ...] = ("cpu", "memory")


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    out = []
    for c in ctx.pod.containers:
        if c.path.startswith("spec.ephemeralContainers"):
            continue
        limits = mapping(mapping(c.raw, "resources", c.path), "limits", f"{c.path}.resources")
        missing = [r for r in config.values if limits.get(r) in (None, "")]
        if missing:
            out.append(f'container "{c.name}" must set resources.limits for {", ".join(missing)}')
    return out


register(PolicyCheck("require_resource_limits", "requireResourceLimits", Config, run, "resource limits"))
