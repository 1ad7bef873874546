"""Crypto mining: miner binaries and stratum connections to the internet (T1496)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

MINERS = (
    "xmrig",
    "xmr-stak",
    "minerd",
    "cpuminer",
    "cgminer",
    "bfgminer",
    "ethminer",
    "ccminer",
    "nheqminer",
    "t-rex",
)
STRATUM_PORTS = (3333, 5555, 7777, 14433, 14444, 45700)


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    miners = sorted(set(MINERS) | set(ctx.killable_names(events)))
    hooks = [tg.exec_hook(tg.exec_selectors(miners, ctx.enforce))]
    if ctx.override_only:
        return hooks
    # Stratum ports only towards the internet: the same port inside the cluster is somebody's service.
    # Other suspicious ports seen in findings are blocked by the IOC blocklists (network.py).
    hooks.append(tg.tcp_connect_hook(tg.internet_port_selectors(STRATUM_PORTS, ctx.enforce)))
    return hooks


register(
    FamilyGenerator(
        name="crypto-mining",
        title="Crypto miners and connections to mining pools",
        techniques=("T1496",),
        tactic="impact",
        routes=(
            Route(categories=frozenset({"crypto_mining"})),
            Route(keywords=("mining", "miner", "crypto", "bitcoin")),
            Route(techniques=("T1496",)),
        ),
        build=build,
    )
)
