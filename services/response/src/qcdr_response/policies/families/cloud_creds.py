"""Cloud credentials: network utilities reaching the instance metadata service (T1552.005)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

IMDS_ADDRESSES = ("169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128")
# The SDKs a workload uses on purpose are not here: only generic fetch tools, which an attacker
# uses to read credentials by hand.
FETCH_TOOLS = ("curl", "wget", "fetch", "http", "httpie", "aria2c", "nc", "ncat", "socat")


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    tools = sorted(set(FETCH_TOOLS) | set(ctx.killable_names(events)))
    binaries = ("Postfix", tg.postfix_names(tools))
    if ctx.override_only:
        return [
            tg.socket_connect_hook(
                [
                    tg.selector(
                        match_args=[tg.match_arg(1, "SAddr", IMDS_ADDRESSES)],
                        binaries=binaries,
                        action=ctx.enforce,
                    )
                ]
            )
        ]
    return [
        tg.tcp_connect_hook(
            [
                tg.selector(
                    match_args=[tg.match_arg(0, "DAddr", IMDS_ADDRESSES)],
                    binaries=binaries,
                    action=ctx.enforce,
                ),
            ]
        )
    ]


register(
    FamilyGenerator(
        name="cloud-creds",
        title="Network utilities reading cloud instance metadata credentials",
        techniques=("T1552.005",),
        tactic="credential-access",
        routes=(
            Route(categories=frozenset({"cloud_credentials_accessed_by_network_utility"})),
            Route(keywords=("cloud_cred", "imds", "instance_metadata")),
            Route(techniques=("T1552.005",)),
        ),
        build=build,
    )
)
