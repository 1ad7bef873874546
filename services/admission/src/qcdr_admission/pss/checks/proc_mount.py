"""Baseline: the default /proc masks stay (``procMount`` unset or ``Default``). From v1.35 a pod
in its own user namespace (``hostUsers: false``) may unmask /proc; restricted keeps the strict
rule through ``procMount_restricted``."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers, quoted, sorted_unique
from qcdr_admission.pss.pod import Pod, string
from qcdr_admission.pss.registry import Check, Revision, register


def proc_mount_v1_0(pod: Pod) -> str | None:
    bad: list[str] = []
    values: list[str] = []
    for c in pod.containers:
        value = string(c.sc, "procMount", c.sc_path)
        if value is not None and value != "Default":
            bad.append(c.name)
            values.append(value)
    if not bad:
        return None
    return (
        f"{containers(bad)} must not set securityContext.procMount to {quoted(sorted_unique(values))} "
        '(only "Default")'
    )


def proc_mount_v1_35(pod: Pod) -> str | None:
    if pod.in_user_namespace:
        return None
    return proc_mount_v1_0(pod)


register(Check("procMount", "baseline", (Revision(0, proc_mount_v1_0), Revision(35, proc_mount_v1_35))))
