"""Restricted: containers must run as non-root: ``runAsNonRoot: true`` at pod level (a container
may then leave it unset) or on every container, and never ``false`` anywhere. From v1.35 a pod in
its own user namespace (``hostUsers: false``) is exempt: root inside it is not root on the host."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers, setters
from qcdr_admission.pss.pod import Pod, boolean
from qcdr_admission.pss.registry import Check, Revision, register


def run_as_non_root_v1_0(pod: Pod) -> str | None:
    pod_value = boolean(pod.sc, "runAsNonRoot", "spec.securityContext")
    explicit: list[str] = []  # set runAsNonRoot=false
    implicit: list[str] = []  # left it unset with no pod-level true to inherit
    for c in pod.containers:
        value = boolean(c.sc, "runAsNonRoot", c.sc_path)
        if value is False:
            explicit.append(c.name)
        elif value is None and pod_value is not True:
            implicit.append(c.name)
    if pod_value is False or explicit:
        return f"{setters(pod_value is False, explicit)} must not set securityContext.runAsNonRoot=false"
    if implicit:
        return f"pod or {containers(implicit)} must set securityContext.runAsNonRoot=true"
    return None


def run_as_non_root_v1_35(pod: Pod) -> str | None:
    return None if pod.in_user_namespace else run_as_non_root_v1_0(pod)


register(
    Check(
        "runAsNonRoot",
        "restricted",
        (Revision(0, run_as_non_root_v1_0), Revision(35, run_as_non_root_v1_35)),
    )
)
