"""Lateral movement: remote-access and remote-copy clients started in a workload (T1021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

REMOTE_TOOLS = (
    "ssh",
    "scp",
    "sftp",
    "sshpass",
    "rsh",
    "telnet",
    "xfreerdp",
    "rdesktop",
    "vncviewer",
    "kubectl",
    "crictl",
    "ctr",
)


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    tools = sorted(set(REMOTE_TOOLS) | set(ctx.killable_names(events)))
    return [tg.exec_hook(tg.exec_selectors(tools, ctx.enforce))]


register(
    FamilyGenerator(
        name="lateral-movement",
        title="Remote access and remote copy tools started inside workloads",
        techniques=("T1021.004",),
        tactic="lateral-movement",
        routes=(
            Route(categories=frozenset({"lateral_movement"})),
            Route(keywords=("lateral", "remote_service", "ssh")),
            Route(techniques=("T1021", "T1210", "T1609")),
        ),
        build=build,
    )
)
