"""Restricted from v1.35: /proc stays masked (``procMount`` unset or ``Default``) even in a user
namespace. Replaces baseline's ``procMount``, which relaxed for user-namespaced pods in v1.35."""

from __future__ import annotations

from qcdr_admission.pss.checks.proc_mount import proc_mount_v1_0
from qcdr_admission.pss.pod import Pod
from qcdr_admission.pss.registry import Check, Revision, register


def proc_mount_restricted_v1_35(pod: Pod) -> str | None:
    return proc_mount_v1_0(pod)


register(
    Check(
        "procMount_restricted",
        "restricted",
        (Revision(35, proc_mount_restricted_v1_35, overrides=("procMount",)),),
    )
)
