"""Defense evasion: tampering with security agents, their config, logs and MAC policy (T1562, T1070)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

AGENT_CONFIG_PREFIXES = (
    "/etc/falco/",
    "/etc/tetragon/",
    "/etc/qualys/",
    "/opt/qualys/",
    "/var/spool/qualys/",
    "/etc/apparmor.d/",
    "/etc/selinux/",
    "/etc/audit/",
)
LOG_PREFIXES = ("/var/log/",)
EVASION_TOOLS = ("setenforce", "aa-disable", "aa-teardown", "auditctl", "shred", "history", "chattr")


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    hooks = [
        tg.file_permission_hook(
            tg.file_selectors("Prefix", AGENT_CONFIG_PREFIXES, ctx.enforce, access=tg.MAY_WRITE)
        ),
        tg.exec_hook(tg.exec_selectors(EVASION_TOOLS, ctx.enforce)),
    ]
    # Log rotation truncates /var/log legitimately: truncation there is observed, not blocked.
    hooks.append(
        tg.truncate_hook(
            [tg.selector(match_args=[tg.match_arg(0, "Prefix", LOG_PREFIXES)], action=ctx.audit)]
        )
    )
    if ctx.override_only:
        hooks.pop()
    return hooks


register(
    FamilyGenerator(
        name="defense-evasion",
        title="Tampering with security agents, audit and MAC configuration, and logs",
        techniques=("T1562.001", "T1070.002"),
        tactic="defense-evasion",
        routes=(
            Route(categories=frozenset({"defense_evasion"})),
            Route(keywords=("evasion", "log_tamper", "tamper")),
            Route(techniques=("T1562", "T1070", "T1564", "T1036")),
        ),
        build=build,
    )
)
