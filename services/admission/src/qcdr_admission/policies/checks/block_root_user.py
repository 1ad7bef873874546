"""No container may run as root: ``runAsUser: 0`` anywhere is refused, and a container must be
known not to be root (``runAsNonRoot: true`` or a non-zero ``runAsUser``, on it or on the pod).
A pod without any securityContext is therefore refused, not waved through.

"Anywhere" includes the pod's securityContext when every container overrides it with a non-zero
UID: nothing runs as root then, but a container added to the template without a ``runAsUser``
would (PSS restricted refuses it too)."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.checks._common import effective_bool
from qcdr_admission.policies.context import CheckContext, quoted
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register
from qcdr_admission.pss.pod import integer


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    pod_uid = integer(ctx.pod.sc, "runAsUser", "spec.securityContext")
    root, inheriting, unknown = [], [], []
    for c in ctx.pod.containers:
        own = integer(c.sc, "runAsUser", c.sc_path)
        if own == 0:
            root.append(c.name)
        elif own is None and pod_uid == 0:
            inheriting.append(c.name)
        elif own is None and pod_uid is None and effective_bool(ctx, c, "runAsNonRoot") is not True:
            unknown.append(c.name)
    out = []
    if pod_uid == 0:
        by_it = f" (inherited by {quoted(inheriting)})" if inheriting else ""
        out.append(f"spec.securityContext must not set runAsUser=0{by_it}")
    if root:
        out.append(f"{quoted(root)} must not run as root (runAsUser=0)")
    if unknown:
        out.append(f"{quoted(unknown)} must set runAsNonRoot=true or a non-zero runAsUser")
    return out


register(PolicyCheck("block_root_user", "blockRootUser", CheckConfig, run, "no root user"))
