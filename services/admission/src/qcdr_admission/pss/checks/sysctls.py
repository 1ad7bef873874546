"""Baseline: only the namespaced, isolated ("safe") sysctls; the list grew in v1.27, v1.29, v1.32
and v1.37. Sysctls exist only at pod level (``spec.securityContext.sysctls``)."""

from __future__ import annotations

from qcdr_admission.pss.describe import plural, quoted
from qcdr_admission.pss.pod import Pod, mappings, string
from qcdr_admission.pss.registry import Check, CheckFn, Revision, register

SAFE_V1_0 = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    }
)
SAFE_V1_27 = SAFE_V1_0 | {"net.ipv4.ip_local_reserved_ports"}
SAFE_V1_29 = SAFE_V1_27 | {
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SAFE_V1_32 = SAFE_V1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
SAFE_V1_37 = SAFE_V1_32 | {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}


def _make(safe: frozenset[str]) -> CheckFn:
    def sysctls(pod: Pod) -> str | None:
        where = "spec.securityContext"
        bad = []
        for index, sysctl in enumerate(mappings(pod.sc, "sysctls", where)):
            name = string(sysctl, "name", f"{where}.sysctls[{index}]") or ""
            if name not in safe:
                bad.append(name)
        if not bad:
            return None
        return f"pod must not set unsafe {plural(len(bad), 'sysctl', 'sysctls')} {quoted(bad)}"

    return sysctls


register(
    Check(
        "sysctls",
        "baseline",
        (
            Revision(0, _make(SAFE_V1_0)),
            Revision(27, _make(SAFE_V1_27)),
            Revision(29, _make(SAFE_V1_29)),
            Revision(32, _make(SAFE_V1_32)),
            Revision(37, _make(SAFE_V1_37)),
        ),
    )
)
