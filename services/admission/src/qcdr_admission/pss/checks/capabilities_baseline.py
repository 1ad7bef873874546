"""Baseline: containers may add only the default container-runtime capabilities."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers, quoted, sorted_unique
from qcdr_admission.pss.pod import Pod, mapping, strings
from qcdr_admission.pss.registry import Check, Revision, register

ALLOWED = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def capabilities_baseline_v1_0(pod: Pod) -> str | None:
    bad: list[str] = []
    added: list[str] = []
    for c in pod.containers:
        caps = mapping(c.sc, "capabilities", c.sc_path)
        extra = [cap for cap in strings(caps, "add", f"{c.sc_path}.capabilities") if cap not in ALLOWED]
        if extra:
            bad.append(c.name)
            added.extend(extra)
    if not bad:
        return None
    return (
        f"{containers(bad)} must not add capabilities beyond the baseline set "
        f"(securityContext.capabilities.add has {quoted(sorted_unique(added))})"
    )


register(Check("capabilities_baseline", "baseline", (Revision(0, capabilities_baseline_v1_0),)))
