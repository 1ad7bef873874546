"""Shared baselines on the hub: the newest generation per (profile key, source cluster) is kept;
a spoke reads the others' baselines after its cursor (``seq``), one per profile key (the highest
generation among the other clusters, so two clusters sharing the same image do not take turns).
Baselines of removed clusters are no longer handed out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from qcdr_common.contracts.federation.v1 import SharedBaseline
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from qcdr_federation.hub.baselines.models import BASELINE_SEQ, BaselineRow
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.spoke_auth import SpokeCaller

# pg_advisory_xact_lock key of baseline uploads: "qcdr_BAS" in ASCII, fixed forever
UPLOAD_LOCK_KEY = 0x7163_6472_5F42_4153


async def store(
    session: AsyncSession, caller: SpokeCaller, baselines: Sequence[SharedBaseline], now: datetime
) -> int:
    """Upsert the caller's baselines (its own cluster, whatever ``source_cluster`` said); a
    generation not newer than the stored one changes nothing. Returns how many were stored."""
    newest: dict[str, SharedBaseline] = {}
    for b in baselines:
        if b.profile_key not in newest or b.generation > newest[b.profile_key].generation:
            newest[b.profile_key] = b
    if not newest:
        return 0
    # uploads one at a time (to commit): ``seq`` values then become visible in order, so a spoke
    # reading "after seq N" can never skip a row committed later with a smaller seq
    await session.execute(select(func.pg_advisory_xact_lock(UPLOAD_LOCK_KEY)))
    values = insert(BaselineRow).values(
        [
            {
                "profile_key": b.profile_key,
                "source_cluster_id": caller.cluster_id,
                "generation": b.generation,
                "ready_at": b.ready_at,
                "data": b.data,
                "updated_at": now,
            }
            for b in newest.values()
        ]
    )
    stmt = values.on_conflict_do_update(
        index_elements=[BaselineRow.profile_key, BaselineRow.source_cluster_id],
        set_={
            "generation": values.excluded.generation,
            "ready_at": values.excluded.ready_at,
            "data": values.excluded.data,
            # a new position: cursors past the old one see the update
            "seq": BASELINE_SEQ.next_value(),
            "updated_at": values.excluded.updated_at,
        },
        where=BaselineRow.generation < values.excluded.generation,
    ).returning(BaselineRow.profile_key)
    return len((await session.scalars(stmt)).all())


def shared(row: BaselineRow, source_cluster: str) -> SharedBaseline:
    return SharedBaseline(
        profile_key=row.profile_key,
        source_cluster=source_cluster,
        generation=row.generation,
        ready_at=row.ready_at,
        data=row.data,
        shared_at=row.updated_at,
    )


async def for_spoke(
    session: AsyncSession, caller: SpokeCaller, *, after: int, limit: int
) -> tuple[list[SharedBaseline], int, bool]:
    """Other live clusters' baselines after ``after``: (items, the cursor to pass next, more?)."""
    other = aliased(BaselineRow)
    other_cluster = aliased(ClusterRow)
    better = exists().where(
        other.profile_key == BaselineRow.profile_key,
        other.source_cluster_id != caller.cluster_id,
        other.source_cluster_id == other_cluster.id,
        other_cluster.removed_at.is_(None),
        or_(
            other.generation > BaselineRow.generation,
            and_(other.generation == BaselineRow.generation, other.seq > BaselineRow.seq),
        ),
    )
    rows = (
        await session.execute(
            select(BaselineRow, ClusterRow.name)
            .join(ClusterRow, ClusterRow.id == BaselineRow.source_cluster_id)
            .where(
                BaselineRow.seq > after,
                BaselineRow.source_cluster_id != caller.cluster_id,
                ClusterRow.removed_at.is_(None),
                ~better,
            )
            .order_by(BaselineRow.seq)
            .limit(limit + 1)
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = rows[-1][0].seq if rows else after
    return [shared(row, name) for row, name in rows], cursor, more
