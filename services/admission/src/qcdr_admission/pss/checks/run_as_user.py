"""Restricted from v1.23: no ``runAsUser: 0`` at pod or container level (unset is fine:
``runAsNonRoot`` covers the image's user). From v1.35 a pod in its own user namespace is exempt."""

from __future__ import annotations

from qcdr_admission.pss.describe import setters
from qcdr_admission.pss.pod import Pod, integer
from qcdr_admission.pss.registry import Check, Revision, register


def run_as_user_v1_23(pod: Pod) -> str | None:
    pod_bad = integer(pod.sc, "runAsUser", "spec.securityContext") == 0
    names = [c.name for c in pod.containers if integer(c.sc, "runAsUser", c.sc_path) == 0]
    if not pod_bad and not names:
        return None
    return f"{setters(pod_bad, names)} must not run as root (securityContext.runAsUser=0)"


def run_as_user_v1_35(pod: Pod) -> str | None:
    return None if pod.in_user_namespace else run_as_user_v1_23(pod)


register(Check("runAsUser", "restricted", (Revision(23, run_as_user_v1_23), Revision(35, run_as_user_v1_35))))
