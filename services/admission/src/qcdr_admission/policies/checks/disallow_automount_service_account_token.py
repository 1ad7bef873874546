"""The pod sets ``automountServiceAccountToken: false`` (the service account's own setting cannot
be seen at admission, so the pod must say it)."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register
from qcdr_admission.pss.pod import boolean


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    if boolean(ctx.pod.spec, "automountServiceAccountToken", "spec") is False:
        return []
    return ["spec.automountServiceAccountToken must be false"]


register(
    PolicyCheck(
        "disallow_automount_service_account_token",
        "disallowAutomountServiceAccountToken",
        CheckConfig,
        run,
        "no automounted service-account token",
    )
)
