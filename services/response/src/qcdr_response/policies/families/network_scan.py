"""Network scanning utilities and raw sockets (T1046)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

SCANNERS = (
    "nmap",
    "masscan",
    "zmap",
    "rustscan",
    "unicornscan",
    "netdiscover",
    "arp-scan",
    "fping",
    "hping3",
)
SOCK_RAW = 3
SOCK_NONBLOCK = 0o4000
SOCK_CLOEXEC = 0o2000000


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    tools = sorted(set(SCANNERS) | set(ctx.killable_names(events)))
    hooks = [tg.exec_hook(tg.exec_selectors(tools, ctx.enforce))]
    if not ctx.override_only:
        # Raw sockets also serve ping and health checks: observe them, never kill for them.
        raw_types = [
            SOCK_RAW,
            SOCK_RAW | SOCK_NONBLOCK,
            SOCK_RAW | SOCK_CLOEXEC,
            SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
        ]
        hooks.append(
            tg.int_syscall_hook(
                "sys_socket",
                ("int", "int"),
                [tg.selector(match_args=[tg.match_arg(1, "Equal", raw_types)], action=ctx.audit)],
            )
        )
    return hooks


register(
    FamilyGenerator(
        name="network-scan",
        title="Network scanning tools started in a container",
        techniques=("T1046",),
        tactic="discovery",
        routes=(
            Route(categories=frozenset({"network_scanning_utility"})),
            Route(keywords=("scan",)),
            Route(techniques=("T1046", "T1595")),
        ),
        build=build,
    )
)
