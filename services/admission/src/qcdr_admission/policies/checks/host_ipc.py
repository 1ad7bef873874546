"""No `spec.hostIPC: true` (read whether or not the pod has a securityContext)."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.checks._common import host_flag
from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    return host_flag(ctx, "hostIPC")


register(PolicyCheck("host_ipc", "hostIPC", CheckConfig, run, "no host ipc namespace"))
