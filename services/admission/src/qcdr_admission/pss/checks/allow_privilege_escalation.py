"""Restricted from v1.8: every container sets ``allowPrivilegeEscalation: false``. From v1.25
Windows pods are exempt (the field does not exist there)."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers
from qcdr_admission.pss.pod import Pod, boolean
from qcdr_admission.pss.registry import Check, Revision, register


def allow_privilege_escalation_v1_8(pod: Pod) -> str | None:
    bad = [
        c.name for c in pod.containers if boolean(c.sc, "allowPrivilegeEscalation", c.sc_path) is not False
    ]
    if not bad:
        return None
    return f"{containers(bad)} must set securityContext.allowPrivilegeEscalation=false"


def allow_privilege_escalation_v1_25(pod: Pod) -> str | None:
    return None if pod.is_windows else allow_privilege_escalation_v1_8(pod)


register(
    Check(
        "allowPrivilegeEscalation",
        "restricted",
        (Revision(8, allow_privilege_escalation_v1_8), Revision(25, allow_privilege_escalation_v1_25)),
    )
)
