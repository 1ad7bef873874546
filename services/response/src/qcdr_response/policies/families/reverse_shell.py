"""Reverse shells and C2: netcat-style tools and shells connecting out on C2 ports (T1059.004, T1071)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

SHELL_TOOLS = ("nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "socat", "pwncat")
SHELLS = ("/sh", "/bash", "/dash", "/zsh", "/ash", "/ksh", "/busybox")


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    hooks = [tg.exec_hook(tg.exec_selectors(SHELL_TOOLS, ctx.enforce))]
    if ctx.override_only:
        return hooks
    ports = ctx.config.suspicious_ports
    # A shell that opens a TCP connection to the internet on a C2 port is the reverse shell itself.
    hooks.append(
        tg.tcp_connect_hook(tg.internet_port_selectors(ports, ctx.enforce, binaries=("Postfix", SHELLS)))
    )
    return hooks


register(
    FamilyGenerator(
        name="reverse-shell",
        title="Reverse shells and command-and-control channels",
        techniques=("T1059.004", "T1071"),
        tactic="execution",
        routes=(
            Route(
                categories=frozenset({"networking_c2_communication", "networking_suspicious_communication"})
            ),
            Route(keywords=("reverse_shell", "c2", "command_and_control", "suspicious_communication")),
            Route(techniques=("T1059.004", "T1071")),
        ),
        build=build,
    )
)
