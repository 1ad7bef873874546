"""Baseline: the pod must not share the host's network, PID or IPC namespace."""

from __future__ import annotations

from qcdr_admission.pss.pod import Pod, boolean
from qcdr_admission.pss.registry import Check, Revision, register

FIELDS = ("hostNetwork", "hostPID", "hostIPC")


def host_namespaces_v1_0(pod: Pod) -> str | None:
    shared = [f"{field}=true" for field in FIELDS if boolean(pod.spec, field, "spec") is True]
    if not shared:
        return None
    return f"pod must not share host namespaces ({', '.join(shared)})"


register(Check("hostNamespaces", "baseline", (Revision(0, host_namespaces_v1_0),)))
