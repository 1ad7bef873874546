"""No hostPath at, below or above a blocked path, unless it is at or below an allowed one; paths
compare canonically and by whole components (``/var/logs`` is not under ``/var/log``).

``blocked_host_paths: {values: ["/"], allow: ["/var/log"]}`` is the seed's "hostPath only under
/var/log". An allowed path's ancestors are not allowed (``/var`` exposes more than ``/var/log``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import field_validator

from qcdr_admission.policies.checks._common import host_paths
from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.paths import canonical, first_overlap, within
from qcdr_admission.policies.registry import ListConfig, PolicyCheck, register


class Config(ListConfig):
    allow: tuple[str, ...] = ()

    @field_validator("values", "allow")
    @classmethod
    def _canonical(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            if not v.startswith("/"):
                raise ValueError(f"{v!r} is not an absolute path")
        return tuple(canonical(v) for v in values)


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    out = []
    for name, path in host_paths(ctx):
        normal = canonical(path)
        if any(within(normal, a) for a in config.allow):
            continue
        hit = first_overlap(normal, config.values)
        if hit is not None:
            out.append(f'volume "{name}": hostPath {path!r} is blocked ({normal} overlaps {hit})')
    return out


register(PolicyCheck("blocked_host_paths", "blockedHostPaths", Config, run, "no blocked host paths"))
