"""Impact: wiping tools and mass deletion helpers started in a workload (T1485, T1490)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.family import FamilyContext, FamilyGenerator, Route, register

WIPERS = ("shred", "wipe", "srm", "secure-delete", "vgremove", "lvremove", "pvremove", "wipefs", "mkfs")


def build(events: Sequence[SecurityEvent], ctx: FamilyContext) -> list[dict[str, Any]]:
    return [tg.exec_hook(tg.exec_selectors(WIPERS, ctx.enforce))]


register(
    FamilyGenerator(
        name="data-destruction",
        title="Wiping tools and recovery inhibition",
        techniques=("T1485", "T1490"),
        tactic="impact",
        routes=(
            Route(categories=frozenset({"impact"})),
            Route(keywords=("destruct", "wipe", "ransom", "backup_deletion", "system_recovery")),
            Route(techniques=("T1485", "T1490", "T1561")),
        ),
        build=build,
    )
)
