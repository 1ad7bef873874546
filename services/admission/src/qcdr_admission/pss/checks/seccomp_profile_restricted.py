"""Restricted from v1.19: seccomp explicitly ``RuntimeDefault`` or ``Localhost``, at pod level (a
container may then leave it unset) or on every container; nothing else anywhere. Replaces
``seccompProfile_baseline`` at the restricted level. From v1.25 Windows pods are exempt."""

from __future__ import annotations

from qcdr_admission.pss.checks.seccomp_profile_baseline import VALID_TYPES, seccomp_type
from qcdr_admission.pss.describe import containers, quoted, setters, sorted_unique
from qcdr_admission.pss.pod import Pod
from qcdr_admission.pss.registry import Check, Revision, register


def seccomp_restricted_v1_19(pod: Pod) -> str | None:
    values: list[str] = []
    pod_type = seccomp_type(pod.sc, "spec.securityContext")
    pod_bad = False
    if pod_type is not None and pod_type not in VALID_TYPES:
        pod_bad = True
        values.append(pod_type)
    pod_set = pod_type in VALID_TYPES
    explicit: list[str] = []
    implicit: list[str] = []
    for c in pod.containers:
        kind = seccomp_type(c.sc, c.sc_path)
        if kind is None:
            if not pod_set:
                implicit.append(c.name)
        elif kind not in VALID_TYPES:
            explicit.append(c.name)
            values.append(kind)
    if pod_bad or explicit:
        return (
            f"{setters(pod_bad, explicit)} must not set securityContext.seccompProfile.type to "
            f"{quoted(sorted_unique(values))}"
        )
    if implicit:
        return (
            f'pod or {containers(implicit)} must set securityContext.seccompProfile.type to "RuntimeDefault" '
            'or "Localhost"'
        )
    return None


def seccomp_restricted_v1_25(pod: Pod) -> str | None:
    return None if pod.is_windows else seccomp_restricted_v1_19(pod)


OVERRIDES = ("seccompProfile_baseline",)
register(
    Check(
        "seccompProfile_restricted",
        "restricted",
        (
            Revision(19, seccomp_restricted_v1_19, OVERRIDES),
            Revision(25, seccomp_restricted_v1_25, OVERRIDES),
        ),
    )
)
