"""What a policy-generation run is allowed to do: action, targets, scopes and never-block lists."""

from __future__ import annotations

import ipaddress
from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Ports that carry ordinary traffic in every cluster: denying them "because a finding mentioned
# them" would take workloads down, so they can never be in the suspicious set.
NEVER_SUSPICIOUS_PORTS = frozenset({53, 80, 443, 6443, 8080, 8443})

# A Tetragon selector takes 4 port values and a hook 5 selectors; the IOC blocklist's connect hook
# keeps one selector for addresses, which leaves 16 ports.
MAX_SUSPICIOUS_PORTS = 16

DEFAULT_SUSPICIOUS_PORTS = (1337, 3333, 4444, 5555, 6666, 6667, 9001, 9050, 12345, 14433, 14444, 27374, 31337)

# Binaries of the node and the container runtime: they legitimately unshare, setns, mount and
# memfd_create, so enforcement on those calls must never hit them.
DEFAULT_RUNTIME_BINARIES = (
    "/usr/bin/runc",
    "/usr/sbin/runc",
    "/usr/local/bin/runc",
    "/usr/bin/crun",
    "/usr/bin/conmon",
    "/usr/bin/containerd",
    "/usr/local/bin/containerd",
    "/usr/bin/containerd-shim",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/local/bin/containerd-shim-runc-v2",
    "/usr/bin/crio",
    "/usr/local/bin/crio",
    "/usr/bin/dockerd",
    "/usr/bin/kubelet",
    "/usr/local/bin/kubelet",
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd",
)

# Process names seen in findings that are never added to an exec kill-list, whatever a finding says:
# killing every shell, interpreter or runtime in a namespace is an outage, not a response.
DEFAULT_PROTECTED_NAMES = (
    "sh",
    "bash",
    "dash",
    "zsh",
    "ash",
    "ksh",
    "busybox",
    "env",
    "python",
    "python2",
    "python3",
    "perl",
    "ruby",
    "php",
    "node",
    "java",
    "dotnet",
    "runc",
    "crun",
    "containerd",
    "containerd-shim-runc-v2",
    "conmon",
    "kubelet",
    "pause",
    "tini",
    "dumb-init",
    "s6-svscan",
    "supervisord",
    "sleep",
    "cat",
    "ls",
)


class EnforcementAction(StrEnum):
    POST = "Post"
    SIGKILL = "Sigkill"
    OVERRIDE = "Override"


class OverrideHooks(StrEnum):
    """Where the ``-override`` companions refuse operations.

    ``kprobes``: error injection on syscalls and ``security_*`` functions (needs
    CONFIG_BPF_KPROBE_OVERRIDE on the nodes). ``lsm``: BPF LSM hooks (``lsmhooks``, Tetragon 1.2+,
    kernel 5.7+ booted with ``lsm=...,bpf``), for nodes that have BPF LSM but no kprobe override;
    syscall hooks without an LSM equivalent (``setns``, ``unshare``, ``socket``) are left out
    of the override and listed on the policy."""

    KPROBES = "kprobes"
    LSM = "lsm"


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: EnforcementAction = EnforcementAction.POST
    tetragon_version: str = "1.5"
    kernel_version: str = "5.10"
    cilium_version: str = "1.17"
    run_date: date = Field(default_factory=date.today)
    suspicious_ports: frozenset[int] = frozenset(DEFAULT_SUSPICIOUS_PORTS)
    never_block: tuple[str, ...] = Field(
        default=(),
        description="CIDRs that are never blocked (cluster pod/service CIDRs, DNS, the API server).",
    )
    runtime_binaries: tuple[str, ...] = DEFAULT_RUNTIME_BINARIES
    protected_names: frozenset[str] = frozenset(DEFAULT_PROTECTED_NAMES)
    max_source_ids: int = Field(default=20, ge=1, le=200)
    override_hooks: OverrideHooks = OverrideHooks.KPROBES

    @field_validator("suspicious_ports")
    @classmethod
    def _no_ordinary_ports(cls, ports: frozenset[int]) -> frozenset[int]:
        bad = sorted(ports & NEVER_SUSPICIOUS_PORTS)
        if bad:
            raise ValueError(f"ports {bad} carry ordinary traffic and can never be treated as suspicious")
        if len(ports) > MAX_SUSPICIOUS_PORTS:
            raise ValueError(
                f"{len(ports)} suspicious ports given; at most {MAX_SUSPICIOUS_PORTS} fit one Tetragon "
                "connect hook (block larger port sets with a Cilium policy)"
            )
        out_of_range = sorted(p for p in ports if not 0 < p < 65536)
        if out_of_range:
            raise ValueError(f"not TCP/UDP ports: {out_of_range}")
        return ports

    @field_validator("never_block")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_network(c, strict=False)) for c in cidrs)
