"""No container may run as root: ``runAsUser: 0`` anywhere is refused, and a container must be
known not to be root (``runAsNonRoot: true`` or a non-zero ``runAsUser``, on it or on the pod).
A pod without any securityContext is therefore refused, not waved through."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.checks._common import effective_bool, effective_int
from qcdr_admission.policies.context import CheckContext, quoted
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    root, unknown = [], []
    for c in ctx.pod.containers:
        uid = effective_int(ctx, c, "runAsUser")
        if uid == 0:
            root.append(c.name)
        elif uid is None and effective_bool(ctx, c, "runAsNonRoot") is not True:
            unknown.append(c.name)
    out = []
    if root:
        out.append(f"{quoted(root)} must not run as root (runAsUser=0)")
    if unknown:
        out.append(f"{quoted(unknown)} must set runAsNonRoot=true or a non-zero runAsUser")
    return out


register(PolicyCheck("block_root_user", "blockRootUser", CheckConfig, run, "no root user"))
