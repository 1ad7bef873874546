"""Container escape: namespace changes, cgroup release agents, host namespace tools (T1611)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

ESCAPE_TOOLS = ("nsenter", "unshare", "debugfs", "chroot", "capsh")
RELEASE_AGENT_FILES = ("/release_agent", "/notify_on_release")


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    # The runtime itself joins and creates namespaces; it is excluded by binary so that only a
    # process inside the workload changing namespaces is matched.
    not_runtime = ("NotIn", ctx.config.runtime_binaries)
    return [
        tg.int_syscall_hook(
            "sys_setns",
            ("int", "int"),
            [tg.selector(match_args=[], binaries=not_runtime, action=ctx.enforce)],
        ),
        tg.int_syscall_hook(
            "sys_unshare", ("int",), [tg.selector(match_args=[], binaries=not_runtime, action=ctx.enforce)]
        ),
        tg.exec_hook(tg.exec_selectors(ESCAPE_TOOLS, ctx.enforce)),
        tg.file_permission_hook(
            tg.file_selectors("Postfix", RELEASE_AGENT_FILES, ctx.enforce, access=tg.MAY_WRITE)
        ),
    ]


register(
    FamilyGenerator(
        name="container-escape",
        title="Attempts to leave the container: namespace changes and cgroup release agents",
        techniques=("T1611",),
        tactic="privilege-escalation",
        routes=(
            Route(categories=frozenset({"container_escape"})),
            Route(keywords=("escape", "breakout")),
            Route(techniques=("T1611",)),
        ),
        build=build,
    )
)
