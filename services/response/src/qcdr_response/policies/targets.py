"""Which Tetragon and Cilium releases we emit policies for, and what each release accepts.

Every feature is keyed by the first release that has it. Release boundaries come from the
upstream PR numbers (cilium/tetragon: v1.4.0 = #3545, 2025-03; v1.5 = #3549..#3950;
v1.6 = #3951..#4229 (rc.1); v1.7 = #4239..v1.7.0, 2026-04-29; later = main). Where the
introduction could not be pinned down the entry says "unverified" and assumes the *newest*
plausible release: refusing a policy an older agent would have taken costs us little, shipping
one the agent rejects at load time (invisibly, only in its metrics) costs an enforcement gap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Version = tuple[int, int]

MIN_TETRAGON: Version = (1, 4)
MAX_TETRAGON: Version = (1, 7)
MIN_KERNEL: Version = (5, 10)
MIN_CILIUM: Version = (1, 16)
# Marks what exists only on Tetragon main after v1.7.0: never available to a supported target.
UNRELEASED: Version = (1, 8)

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:[.\-+].*)?$")


def parse_version(text: str, what: str) -> Version:
    """``"1.5"``, ``"v1.5.2"`` or a kernel release like ``"6.8.0-1019-aws"`` -> ``(major, minor)``."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ValueError(f"{what} version {text!r} is not of the form MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2))


def fmt(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class Requirement:
    """What a feature needs: a Tetragon release, a kernel, and the release that removed it."""

    tetragon: Version = MIN_TETRAGON
    kernel: Version = (0, 0)
    removed_in: Version | None = None
    note: str = ""


@dataclass(frozen=True)
class Unmet:
    kind: Literal["tetragon", "kernel", "removed"]
    message: str


ALWAYS = Requirement()


@dataclass(frozen=True)
class TetragonTarget:
    """A Tetragon release (1.4-1.7) on a kernel (>= 5.10) that generated policies must load on."""

    version: str = "1.5"
    kernel: str = "5.10"
    release: Version = field(init=False, repr=False)
    kernel_release: Version = field(init=False, repr=False)

    def __post_init__(self) -> None:
        release = parse_version(self.version, "Tetragon")
        kernel = parse_version(self.kernel, "kernel")
        if not MIN_TETRAGON <= release <= MAX_TETRAGON:
            raise ValueError(
                f"Tetragon {self.version} is not supported: targets must be {fmt(MIN_TETRAGON)}"
                f"-{fmt(MAX_TETRAGON)} (older releases lack sockaddr filters; newer ones are unverified)"
            )
        if kernel < MIN_KERNEL:
            raise ValueError(
                f"kernel {self.kernel} is not supported: targets must be >= {fmt(MIN_KERNEL)} "
                "(BTF, large BPF programs and security_* overrides are assumed)"
            )
        # frozen dataclass: derived fields are set once, here.
        object.__setattr__(self, "release", release)
        object.__setattr__(self, "kernel_release", kernel)

    def supports(self, requirement: Requirement) -> bool:
        """For generators: ``target.supports(ARG_TYPES["sockaddr"])``."""
        return self.unmet(requirement, "") is None

    def unmet(self, requirement: Requirement, feature: str) -> Unmet | None:
        """Why ``feature`` cannot be used on this target, or ``None`` when it can."""
        suffix = f" ({requirement.note})" if requirement.note else ""
        if requirement.removed_in is not None and self.release >= requirement.removed_in:
            return Unmet(
                "removed", f"{feature} was removed in Tetragon {fmt(requirement.removed_in)}{suffix}"
            )
        if self.release < requirement.tetragon:
            return Unmet(
                "tetragon",
                f"{feature} needs Tetragon >= {fmt(requirement.tetragon)} "
                f"(target is {fmt(self.release)}){suffix}",
            )
        if self.kernel_release < requirement.kernel:
            return Unmet(
                "kernel",
                f"{feature} needs kernel >= {fmt(requirement.kernel)} "
                f"(target is {fmt(self.kernel_release)}){suffix}",
            )
        return None


@dataclass(frozen=True)
class CiliumTarget:
    """A Cilium release (>= 1.16, the first with ``enableDefaultDeny``)."""

    version: str = "1.17"
    release: Version = field(init=False, repr=False)

    def __post_init__(self) -> None:
        release = parse_version(self.version, "Cilium")
        if release < MIN_CILIUM:
            raise ValueError(
                f"Cilium {self.version} is not supported: targets must be >= {fmt(MIN_CILIUM)}, the first "
                "release where a deny policy can opt out of default-deny (enableDefaultDeny)"
            )
        object.__setattr__(self, "release", release)

    def lacks(self, needed: Version) -> bool:
        return self.release < needed


# --- Tetragon: hooks, spec fields, selector fields ---------------------------------------------

HOOK_KINDS: dict[str, Requirement] = {
    "kprobes": ALWAYS,
    "tracepoints": ALWAYS,
    "uprobes": ALWAYS,
    # In since 1.2; BPF LSM itself needs 5.7 and CONFIG_BPF_LSM on the node.
    "lsmhooks": Requirement(kernel=(5, 7), note="BPF LSM, in Tetragon since 1.2"),
    # Docs example generated 2025-07-28, right at the v1.5.0 cut: unverified, assume 1.6.
    "usdts": Requirement((1, 6), note="USDT probes; release unverified"),
    "fentries": Requirement((1, 6), note="fentry sensor, cilium/tetragon#4039"),
}

SPEC_FIELDS: dict[str, Requirement] = {
    "kprobes": ALWAYS,
    "tracepoints": ALWAYS,
    "uprobes": ALWAYS,
    "lsmhooks": ALWAYS,
    "usdts": ALWAYS,
    "fentries": ALWAYS,
    "lists": ALWAYS,
    "options": ALWAYS,
    "loader": ALWAYS,
    "enforcers": ALWAYS,
    "podSelector": ALWAYS,
    "containerSelector": ALWAYS,
    "selectorsMacros": Requirement((1, 7), note="cilium/tetragon#4548"),
    # Merged 2026-03-31, weeks before v1.7.0: assumed to be in 1.7 (unverified).
    "hostSelector": Requirement((1, 7), note="cilium/tetragon#4814"),
    "nodeSelector": Requirement(UNRELEASED, note="cilium/tetragon#5189, after v1.7.0"),
}

SELECTOR_FIELDS: dict[str, Requirement] = {
    "matchPIDs": ALWAYS,
    "matchArgs": ALWAYS,
    "matchReturnArgs": ALWAYS,
    "matchActions": ALWAYS,
    "matchReturnActions": ALWAYS,
    "matchBinaries": ALWAYS,
    "matchNamespaces": ALWAYS,
    "matchNamespaceChanges": ALWAYS,
    "matchCapabilities": ALWAYS,
    "matchCapabilityChanges": ALWAYS,
    # `data`/`matchData` (read task/pt_regs fields): release unverified.
    "matchData": Requirement((1, 7), note="release unverified"),
    "matchParentBinaries": Requirement(
        (1, 7), note="cilium/tetragon#4254; agent needs --parents-map-enabled"
    ),
    "macros": Requirement((1, 7), note="cilium/tetragon#4548"),
    "matchWorkloads": Requirement(UNRELEASED, note="cilium/tetragon#4833, after v1.7.0"),
    "label": Requirement(UNRELEASED, note="per-selector labels/counters, after v1.7.0; unverified"),
}

# --- Tetragon: argument types ----------------------------------------------------------------

INT_TYPES = frozenset(
    {"int", "uint32", "sint32", "int32", "ulong", "uint64", "size_t", "long", "sint64", "int64", "syscall64"}
)
# Only InMap/NotInMap handle these widths in pkg/selectors (Equal/Mask/GT/LT do not).
SMALL_INT_TYPES = frozenset({"sint8", "int8", "uint8", "sint16", "int16", "uint16"})
CAP_TYPES = frozenset({"kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"})
# Equal/NotEqual on these go through the string hash maps (pkg/selectors writeMatchStrings).
STRING_EQUAL_TYPES = frozenset(
    {"fd", "file", "path", "string", "char_buf", "linux_binprm", "data_loc", "net_device"}
)
PATHLIKE_TYPES = STRING_EQUAL_TYPES | {"filename", "dentry"}
SOCK_TYPES = frozenset({"sock", "skb", "socket"})
SOCKADDR = "sockaddr"

ARG_TYPES: dict[str, Requirement] = {
    **dict.fromkeys(sorted(INT_TYPES | CAP_TYPES), ALWAYS),
    **dict.fromkeys(sorted(PATHLIKE_TYPES), ALWAYS),  # dentry: cilium/tetragon#3423, before v1.4.0
    **dict.fromkeys(
        ["skb", "sock", "nop", "bpf_attr", "perf_event", "bpf_map", "user_namespace", "capability"],
        ALWAYS,
    ),
    **dict.fromkeys(["kiocb", "iov_iter", "cred", "load_info", "module", "char_iovec"], ALWAYS),
    "sockaddr": Requirement((1, 4), note="sockaddr arguments appeared in Tetragon 1.4"),
    "socket": Requirement((1, 4), note="added with sockaddr"),
    "bpf_prog": Requirement((1, 6), note="cilium/tetragon#4124"),
    **dict.fromkeys(sorted(SMALL_INT_TYPES), Requirement((1, 7), note="release unverified")),
    **dict.fromkeys(
        ["auto", "const_buf", "sockaddr_un", "bpf_cmd"], Requirement((1, 7), note="release unverified")
    ),
}

# --- Tetragon: matchArgs operators ---------------------------------------------------------------

INT_OPS = frozenset({"Equal", "NotEqual", "GT", "LT", "GreaterThan", "LessThan", "Mask"})
MAP_OPS = frozenset({"InMap", "NotInMap"})
RANGE_OPS = frozenset({"InRange", "NotInRange"})
STRING_OPS = frozenset({"Prefix", "NotPrefix", "Postfix", "NotPostfix"})
SUBSTRING_OPS = frozenset({"SubString", "SubStringIgnCase"})
ADDR_OPS = frozenset({"SAddr", "NotSAddr", "DAddr", "NotDAddr"})
PORT_OPS = frozenset({"SPort", "NotSPort", "DPort", "NotDPort"})
PRIV_PORT_OPS = frozenset({"SPortPriv", "NotSportPriv", "DPortPriv", "NotDPortPriv"})
SOCK_ENUM_OPS = frozenset({"Protocol", "Family", "State"})
FILETYPE_OPS = frozenset({"FileType", "NotFileType"})
SOCK_OPS = ADDR_OPS | PORT_OPS | PRIV_PORT_OPS | SOCK_ENUM_OPS
# pkg/selectors/kernel.go: "sockaddr only supports [not]saddr, [not]sport[priv], and family".
SOCKADDR_OPS = frozenset({"SAddr", "NotSAddr", "SPort", "NotSPort", "SPortPriv", "NotSportPriv", "Family"})

OPERATORS: dict[str, Requirement] = {
    **dict.fromkeys(sorted(INT_OPS | MAP_OPS | STRING_OPS | SOCK_OPS | {"CapabilitiesGained"}), ALWAYS),
    **dict.fromkeys(sorted(RANGE_OPS), Requirement((1, 6), note="cilium/tetragon#4109")),
    # Existed before the Feb 2026 fixes (#4692): in 1.7 at the latest; earlier release unverified.
    "SubString": Requirement((1, 7), (6, 17), note="in-kernel substring search"),
    "SubStringIgnCase": Requirement((1, 7), (6, 19), note="case-insensitive substring search"),
    **dict.fromkeys(sorted(FILETYPE_OPS), Requirement((1, 7), note="release unverified")),
    # Not in the selector parser of the 1.7 era: treated as main-only.
    "CelExpr": Requirement(UNRELEASED, note="in-kernel CEL, after v1.7.0; unverified"),
}
MATCH_ARG_OPERATORS = frozenset(OPERATORS)


def operators_for(arg_type: str) -> frozenset[str]:
    """matchArgs operators that pkg/selectors accepts for an argument type (empty: not filterable)."""
    if arg_type in INT_TYPES:
        return INT_OPS | MAP_OPS | RANGE_OPS
    if arg_type in SMALL_INT_TYPES:
        return MAP_OPS
    if arg_type in CAP_TYPES:
        return frozenset({"Equal", "NotEqual", "Mask", "CapabilitiesGained"})
    if arg_type in ("file", "path"):
        return frozenset({"Equal", "NotEqual"}) | STRING_OPS | FILETYPE_OPS
    if arg_type in ("string", "char_buf"):
        return frozenset({"Equal", "NotEqual"}) | STRING_OPS | SUBSTRING_OPS
    if arg_type in STRING_EQUAL_TYPES:
        return frozenset({"Equal", "NotEqual"}) | STRING_OPS
    if arg_type == "dentry":
        # Equal/NotEqual only load after cilium/tetragon#5041: see OPERATOR_TYPE_REQUIREMENTS.
        return frozenset({"Equal", "NotEqual"}) | STRING_OPS
    if arg_type == "filename":
        return STRING_OPS
    if arg_type in SOCK_TYPES:
        return SOCK_OPS
    if arg_type == SOCKADDR:
        return SOCKADDR_OPS
    return frozenset()


# Operator/type pairs that only later releases handle (otherwise the agent rejects or ignores them).
OPERATOR_TYPE_REQUIREMENTS: dict[tuple[str, str], Requirement] = {
    ("Equal", "dentry"): Requirement(UNRELEASED, note="cilium/tetragon#5041; use Prefix/Postfix"),
    ("NotEqual", "dentry"): Requirement(UNRELEASED, note="cilium/tetragon#5041; use Prefix/Postfix"),
}

# --- Tetragon: symbolic values pkg/selectors resolves (everything else must be a number) ------

PROTOCOLS = frozenset({
    "IPPROTO_IP", "IPPROTO_ICMP", "IPPROTO_IGMP", "IPPROTO_TCP", "IPPROTO_UDP", "IPPROTO_IPV6",
    "IPPROTO_ICMPV6", "IPPROTO_SCTP", "IPPROTO_UDPLITE", "IPPROTO_RAW", "IPPROTO_MPTCP",
})  # fmt: skip
FAMILIES = frozenset({
    "AF_UNSPEC", "AF_UNIX", "AF_LOCAL", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET",
    "AF_BLUETOOTH", "AF_VSOCK", "AF_XDP", "AF_ALG", "AF_KEY",
})  # fmt: skip
TCP_STATES = frozenset({
    "TCP_ESTABLISHED", "TCP_SYN_SENT", "TCP_SYN_RECV", "TCP_FIN_WAIT1", "TCP_FIN_WAIT2",
    "TCP_TIME_WAIT", "TCP_CLOSE", "TCP_CLOSE_WAIT", "TCP_LAST_ACK", "TCP_LISTEN", "TCP_CLOSING",
    "TCP_NEW_SYN_RECV",
})  # fmt: skip
FILE_TYPES = frozenset({
    "sock", "socket", "lnk", "link", "reg", "regular", "blk", "block", "dir", "chr", "char", "fifo", "pipe",
})  # fmt: skip
# Linux capability names matchCapabilities / capability-typed matchArgs accept.
CAPABILITIES = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
})  # fmt: skip

# --- Tetragon: actions -----------------------------------------------------------------------

ENFORCING_ACTIONS = frozenset({"Sigkill", "Override", "Signal", "NotifyEnforcer"})
DEPRECATED_FD_ACTIONS = frozenset({"FollowFD", "UnfollowFD", "CopyFD"})

ACTIONS: dict[str, Requirement] = {
    **dict.fromkeys(
        [
            "Post",
            "Sigkill",
            "Override",
            "Signal",
            "NoPost",
            "GetUrl",
            "DnsLookup",
            "TrackSock",
            "UntrackSock",
            "NotifyEnforcer",
            "CleanupEnforcerNotification",
        ],
        ALWAYS,
    ),
    # Writes a USDT argument; came after USDT support: release unverified, assume 1.7.
    "Set": Requirement((1, 7), note="USDT argument write; release unverified"),
    **dict.fromkeys(
        sorted(DEPRECATED_FD_ACTIONS),
        Requirement(removed_in=UNRELEASED, note="deprecated since 1.4; use fd_install/file/path arguments"),
    ),
}

# Uprobe Override variants (registers, new symbol/address/offset) need a recent kernel.
UPROBE_OVERRIDE = Requirement(
    (1, 6), (6, 18), note="uprobe register/call override; Tetragon release unverified"
)
FENTRY_ENFORCEMENT = Requirement((1, 7), note="enforcement on fentries came after the sensor; unverified")
IMA_HASH = Requirement(kernel=(5, 11), note="imaHash on LSM hooks")

# --- Cilium ----------------------------------------------------------------------------------

CILIUM_ENABLE_DEFAULT_DENY: Version = (1, 16)  # cilium/cilium#30572
CILIUM_CIDR_GROUP_SELECTOR: Version = (1, 17)  # cilium/cilium#36087
CILIUM_CIDR_GROUP_V2: Version = (1, 18)  # v2alpha1 before; v2 promotion release unverified
CILIUM_LOG_FIELD: Version = (1, 18)  # spec.log.value; release unverified
