"""The built-in policies: the seed's ``default-security`` set (``LoadDefaultPolicies``), with its
bypasses closed: host namespaces are read whatever the pod's securityContext holds, registries
compare on the exact host, host paths compare canonically by component, runtime sockets are found
by canonical path (and through their ancestors), capabilities with or without ``CAP_``.

A stored policy with the same name replaces a built-in one (so it can be tuned or disabled).
"""

from __future__ import annotations

from qcdr_admission.engine import Mode
from qcdr_admission.policies.model import AdmissionPolicy, Match

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "qualys-system")

DEFAULT_SECURITY = AdmissionPolicy(
    name="default-security",
    description="The seed's default-security policy, without its bypasses.",
    mode=Mode.ENFORCE,
    match=Match(exclude_namespaces=SYSTEM_NAMESPACES),
    checks={
        "privileged": True,
        "host_network": True,
        "host_pid": True,
        "host_ipc": True,
        "blocked_capabilities": ["SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_ADMIN", "NET_RAW"],
        "blocked_host_paths": {"values": ["/"], "allow": ["/var/log"]},
        "block_runtime_sockets": True,
    },
)

BUILT_IN: tuple[AdmissionPolicy, ...] = (DEFAULT_SECURITY,)


def merged(stored: list[AdmissionPolicy], *, built_in: bool = True) -> list[AdmissionPolicy]:
    """The built-in policies overridden by stored ones of the same name, plus the stored ones."""
    names = {p.name for p in stored}
    base = [p for p in BUILT_IN if p.name not in names] if built_in else []
    return base + stored
