"""Privilege escalation: setuid/setgid bits, capability tools, SUID helpers (T1548, T1068)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

PRIVESC_TOOLS = ("pkexec", "setcap", "doas", "sudo", "su")
S_ISUID = 0o4000
S_ISGID = 0o2000


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    return [
        tg.exec_hook(tg.exec_selectors(PRIVESC_TOOLS, ctx.enforce)),
        # fchmodat(dirfd, path, mode): setting a setuid or setgid bit from inside a workload.
        tg.int_syscall_hook(
            "sys_fchmodat",
            ("int", "string", "int"),
            [tg.selector(match_args=[tg.match_arg(2, "Mask", [S_ISUID | S_ISGID])], action=ctx.enforce)],
        ),
        tg.int_syscall_hook(
            "sys_fchmod",
            ("int", "int"),
            [tg.selector(match_args=[tg.match_arg(1, "Mask", [S_ISUID | S_ISGID])], action=ctx.enforce)],
        ),
    ]


register(
    FamilyGenerator(
        name="privesc",
        title="Setuid/setgid bits, capability changes and privilege helpers",
        techniques=("T1548.001", "T1068"),
        tactic="privilege-escalation",
        routes=(
            Route(categories=frozenset({"privilege_escalation"})),
            Route(keywords=("privilege", "privesc", "suid", "setuid")),
            Route(techniques=("T1548", "T1068")),
        ),
        build=build,
    )
)
