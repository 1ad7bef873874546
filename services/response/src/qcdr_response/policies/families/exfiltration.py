"""Exfiltration and tunnelling: tunnels, sync tools and file-transfer ports to the internet (T1048, T1572)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

TUNNEL_TOOLS = (
    "rclone",
    "ngrok",
    "chisel",
    "ligolo",
    "ligolo-ng",
    "sshuttle",
    "stunnel",
    "iodine",
    "dnscat2",
    "frpc",
    "gost",
)
TRANSFER_PORTS = (20, 21, 69, 873)


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    tools = sorted(set(TUNNEL_TOOLS) | set(ctx.killable_names(events)))
    hooks = [tg.exec_hook(tg.exec_selectors(tools, ctx.enforce))]
    if not ctx.override_only:
        hooks.append(tg.tcp_connect_hook(tg.internet_port_selectors(TRANSFER_PORTS, ctx.enforce)))
    return hooks


register(
    FamilyGenerator(
        name="exfiltration",
        title="Tunnels and transfers of data out of the cluster",
        techniques=("T1048", "T1572", "T1041"),
        tactic="exfiltration",
        routes=(
            Route(
                categories=frozenset({"networking_c2_communication", "exfiltration"}),
                techniques=("T1048", "T1572", "T1041"),
            ),
            Route(keywords=("exfil", "data_staging", "tunnel")),
            Route(techniques=("T1048", "T1041", "T1567", "T1572")),
        ),
        build=build,
    )
)
