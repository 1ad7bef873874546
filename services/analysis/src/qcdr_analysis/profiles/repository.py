"""All SQL over the profile tables. Functions flush through the caller's session; the caller (the
batch handler, the request) owns the transaction.

The worker's statements take arrays (``unnest``): one statement per batch whatever its size,
compiled and prepared once. Profile JSON travels as text cast to ``jsonb`` (serialized with
orjson, faster than the driver's default for large documents).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Select, Table, exists, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis.profiles.models import ProfileRow, ProfileWorkloadRow
from qcdr_analysis.profiles.profile import LEARNING, Profile
from qcdr_analysis.profiles.store import WorkloadEntry

_PROFILES = cast(Table, ProfileRow.__table__)
CREATED_AT = _PROFILES.c.created_at
KEY = _PROFILES.c.key


def when(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


# ----------------------------------------------------------------------------- worker

# For each key: its generation, and its JSON only when the caller's copy is not that generation
# (-1: the caller has none).
_FETCH = text(
    "SELECT p.key, p.generation, CASE WHEN p.generation <> k.generation THEN p.data::text END AS data"
    " FROM unnest(CAST(:keys AS text[]), CAST(:generations AS bigint[])) AS k(key, generation)"
    " JOIN analysis_profiles p ON p.key = k.key"
)

_INSERT = text(
    "INSERT INTO analysis_profiles"
    " (key, state, generation, ready_generation, first_seen, ready_at, last_seen, summary, data)"
    " SELECT k, s, 1, CASE WHEN s = 'ready' THEN 1 END, f, r, l, CAST(sm AS jsonb), CAST(d AS jsonb)"
    " FROM unnest("
    " CAST(:keys AS text[]), CAST(:states AS text[]), CAST(:first_seen AS timestamptz[]),"
    " CAST(:ready_at AS timestamptz[]), CAST(:last_seen AS timestamptz[]),"
    " CAST(:summaries AS text[]), CAST(:datas AS text[])) AS u(k, s, f, r, l, sm, d)"
    " ON CONFLICT (key) DO NOTHING RETURNING key"
)
# optimistic concurrency: a row is written only over the generation the worker loaded;
# ready_generation is set when the row becomes ready and kept while it stays so
_UPDATE = text(
    "UPDATE analysis_profiles AS p SET state = u.s, generation = p.generation + 1,"
    " ready_generation = CASE WHEN u.s <> 'ready' THEN NULL"
    " WHEN p.state = 'ready' AND p.ready_generation IS NOT NULL THEN p.ready_generation"
    " ELSE p.generation + 1 END,"
    " first_seen = u.f,"
    " ready_at = u.r, last_seen = u.l, summary = CAST(u.sm AS jsonb), data = CAST(u.d AS jsonb),"
    " updated_at = now()"
    " FROM unnest("
    " CAST(:keys AS text[]), CAST(:states AS text[]), CAST(:first_seen AS timestamptz[]),"
    " CAST(:ready_at AS timestamptz[]), CAST(:last_seen AS timestamptz[]),"
    " CAST(:summaries AS text[]), CAST(:datas AS text[]), CAST(:generations AS bigint[]))"
    " AS u(k, s, f, r, l, sm, d, g)"
    " WHERE p.key = u.k AND p.generation = u.g RETURNING p.key"
)
_UPSERT_WORKLOADS = text(
    "INSERT INTO analysis_profile_workloads AS w (workload_key, profile_key, cluster, namespace,"
    " owner_kind, owner_name, image, first_seen, last_seen)"
    " SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:profiles AS text[]), CAST(:clusters AS text[]),"
    " CAST(:namespaces AS text[]), CAST(:kinds AS text[]), CAST(:owners AS text[]),"
    " CAST(:images AS text[]), CAST(:first_seen AS timestamptz[]), CAST(:last_seen AS timestamptz[]))"
    " ON CONFLICT (workload_key) DO UPDATE SET"
    # the newest event decides which image a workload runs (a late event of the old one does not)
    " profile_key = CASE WHEN EXCLUDED.last_seen >= w.last_seen THEN EXCLUDED.profile_key"
    " ELSE w.profile_key END,"
    " image = CASE WHEN EXCLUDED.last_seen >= w.last_seen THEN EXCLUDED.image ELSE w.image END,"
    " cluster = EXCLUDED.cluster, namespace = EXCLUDED.namespace, owner_kind = EXCLUDED.owner_kind,"
    " owner_name = EXCLUDED.owner_name,"
    " first_seen = LEAST(w.first_seen, EXCLUDED.first_seen),"
    " last_seen = GREATEST(w.last_seen, EXCLUDED.last_seen)"
)


async def fetch_changed(
    session: AsyncSession, generations: dict[str, int]
) -> list[tuple[str, int, dict[str, Any] | None]]:
    """(key, generation, JSON or None) of every key Postgres has; JSON when it is not the
    generation the caller holds."""
    keys = sorted(generations)
    result = await session.execute(_FETCH, {"keys": keys, "generations": [generations[k] for k in keys]})
    return [
        (row.key, int(row.generation), None if row.data is None else orjson.loads(row.data)) for row in result
    ]


def _columns(profiles: Sequence[Profile]) -> dict[str, list[Any]]:
    return {
        "keys": [p.key for p in profiles],
        "states": [p.state for p in profiles],
        "first_seen": [when(p.first_seen) for p in profiles],
        "ready_at": [when(p.ready_at if p.first_seen is not None else None) for p in profiles],
        "last_seen": [when(p.last_seen) for p in profiles],
        "summaries": [orjson.dumps(p.summary()).decode() for p in profiles],
        "datas": [orjson.dumps(p.to_json()).decode() for p in profiles],
    }


async def insert_profiles(session: AsyncSession, profiles: Sequence[Profile]) -> set[str]:
    """Insert new profiles (generation 1); returns the keys inserted (a missing one exists)."""
    if not profiles:
        return set()
    result = await session.execute(_INSERT, _columns(profiles))
    return set(result.scalars().all())


async def update_profiles(session: AsyncSession, profiles: Sequence[Profile]) -> set[str]:
    """Write profiles over the generation each holds; returns the keys written (a missing one
    was changed by someone else, or deleted)."""
    if not profiles:
        return set()
    params = _columns(profiles)
    params["generations"] = [p.generation for p in profiles]
    result = await session.execute(_UPDATE, params)
    return set(result.scalars().all())


async def upsert_workloads(session: AsyncSession, entries: Sequence[tuple[str, WorkloadEntry]]) -> None:
    if not entries:
        return
    workloads = [entry.workload for _, entry in entries]
    await session.execute(
        _UPSERT_WORKLOADS,
        {
            "keys": [key for key, _ in entries],
            "profiles": [entry.profile_key for _, entry in entries],
            "clusters": [w.cluster for w in workloads],
            "namespaces": [w.namespace for w in workloads],
            "kinds": [w.owner_kind for w in workloads],
            "owners": [w.owner_name for w in workloads],
            "images": [w.image for w in workloads],
            "first_seen": [when(entry.first) for _, entry in entries],
            "last_seen": [when(entry.last) for _, entry in entries],
        },
    )


# ----------------------------------------------------------------------------- API


@dataclass(frozen=True)
class ProfileFilters:
    state: str | None = None
    namespace: tuple[str, ...] = ()


def select_profiles(filters: ProfileFilters) -> Select[Any]:
    """Profile rows without their JSON (lists show the summary)."""
    stmt = select(
        ProfileRow.key,
        ProfileRow.state,
        ProfileRow.generation,
        ProfileRow.first_seen,
        ProfileRow.ready_at,
        ProfileRow.last_seen,
        ProfileRow.summary,
        ProfileRow.created_at,
        ProfileRow.updated_at,
        ProfileRow.reset_at,
    )
    if filters.state is not None:
        stmt = stmt.where(ProfileRow.state == filters.state)
    if filters.namespace:
        stmt = stmt.where(
            exists().where(
                ProfileWorkloadRow.profile_key == ProfileRow.key,
                ProfileWorkloadRow.namespace.in_(filters.namespace),
            )
        )
    return stmt


async def get_profile(session: AsyncSession, key: str, *, for_update: bool = False) -> ProfileRow | None:
    return await session.get(ProfileRow, key, with_for_update=for_update)


async def lock_profile(session: AsyncSession, key: str) -> ProfileRow | None:
    """The row as Postgres has it now (not an earlier read of this session), locked until commit."""
    stmt = (
        select(ProfileRow)
        .where(ProfileRow.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return cast(ProfileRow | None, await session.scalar(stmt))


async def profile_key_of_workload(session: AsyncSession, workload_key: str) -> str | None:
    stmt = select(ProfileWorkloadRow.profile_key).where(ProfileWorkloadRow.workload_key == workload_key)
    return cast(str | None, await session.scalar(stmt))


async def workload_images(
    session: AsyncSession, workload_keys: Collection[str]
) -> dict[str, tuple[str, str | None]]:
    """Workload key -> (the profile it used last, the image reference it had then)."""
    stmt = select(
        ProfileWorkloadRow.workload_key, ProfileWorkloadRow.profile_key, ProfileWorkloadRow.image
    ).where(ProfileWorkloadRow.workload_key.in_(sorted(workload_keys)))
    return {row.workload_key: (row.profile_key, row.image) for row in await session.execute(stmt)}


async def workloads_of(session: AsyncSession, profile_key: str, limit: int) -> list[ProfileWorkloadRow]:
    stmt = (
        select(ProfileWorkloadRow)
        .where(ProfileWorkloadRow.profile_key == profile_key)
        .order_by(ProfileWorkloadRow.last_seen.desc(), ProfileWorkloadRow.workload_key)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def count_workloads(session: AsyncSession, profile_key: str) -> int:
    stmt = select(func.count()).where(ProfileWorkloadRow.profile_key == profile_key)
    return int(await session.scalar(stmt) or 0)


async def reset_profile(
    session: AsyncSession, row: ProfileRow, data: dict[str, Any], summary: dict[str, Any]
) -> None:
    """Write a reset profile over ``row`` (generation + 1, so workers holding it reload it)."""
    stmt = (
        update(ProfileRow)
        .where(ProfileRow.key == row.key)
        .values(
            state=LEARNING,
            generation=ProfileRow.generation + 1,
            ready_generation=None,
            first_seen=None,
            ready_at=None,
            last_seen=None,
            summary=summary,
            data=data,
            updated_at=func.now(),
            reset_at=func.now(),
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)
