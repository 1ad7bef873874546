"""Rules of the profiles API: resolve a reference, read a profile, reset it. Never commits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis.anomaly import repository as anomaly_repo
from qcdr_analysis.profiles import repository as repo
from qcdr_analysis.profiles.models import ProfileRow
from qcdr_analysis.profiles.profile import Limits, Profile, Seen
from qcdr_analysis.profiles.schemas import (
    Behaviour,
    ProfileCounts,
    ProfileRead,
    ProfileState,
    ProfileSummary,
    SeenAfterLearning,
    SharedFrom,
    TopBehaviours,
    WorkloadRead,
)

PROFILE_PREFIXES = ("sha256:", "image:", "workload:")
MAX_WORKLOADS = 100
MAX_SEEN_AFTER_LEARNING = 100
_READ_LIMITS = Limits()  # caps only matter when a profile grows; reading never does


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def is_profile_key(ref: str) -> bool:
    return ref.startswith(PROFILE_PREFIXES)


async def resolve(session: AsyncSession, ref: str, *, for_update: bool = False) -> ProfileRow | None:
    """The profile a reference names: a profile key, or a workload key (cluster/ns/Kind/name)."""
    key = ref if is_profile_key(ref) else await repo.profile_key_of_workload(session, ref)
    if key is None:
        return None
    return await repo.get_profile(session, key, for_update=for_update)


def progress(state: str, first: datetime | None, ready_at: datetime | None, last: datetime | None) -> float:
    """Share of the learning period covered by event time (1 once ready)."""
    if state == ProfileState.READY:
        return 1.0
    if first is None or ready_at is None or last is None or ready_at <= first:
        return 0.0
    return max(0.0, min(1.0, (last - first) / (ready_at - first)))


def summary_of(row: Any) -> ProfileSummary:
    """A list item from a row of :func:`repository.select_profiles` (or a ProfileRow)."""
    return ProfileSummary(
        key=row.key,
        state=ProfileState(row.state),
        generation=row.generation,
        first_seen=row.first_seen,
        ready_at=row.ready_at,
        last_seen=row.last_seen,
        learning_progress=progress(row.state, row.first_seen, row.ready_at, row.last_seen),
        counts=ProfileCounts.model_validate(row.summary or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        reset_at=row.reset_at,
        shared_from=(row.summary or {}).get("shared_from"),
        inherited_from=(row.summary or {}).get("inherited_from"),
    )


def _top(entries: Mapping[Any, Seen], n: int, **extra: Any) -> list[Behaviour]:
    ranked = sorted(entries.items(), key=lambda item: (-item[1].count, str(item[0])))[:n]
    items = []
    for value, seen in ranked:
        fields = {name: getter(seen) for name, getter in extra.items()}
        items.append(
            Behaviour(
                value=str(value),
                count=seen.count,
                first_seen=_dt(seen.first),
                last_seen=_dt(seen.last),
                **fields,
            )
        )
    return items


async def read(session: AsyncSession, row: ProfileRow, top_n: int) -> ProfileRead:
    profile = Profile.from_json(row.data, _READ_LIMITS, row.generation)
    workloads = await repo.workloads_of(session, row.key, MAX_WORKLOADS)
    count = await repo.count_workloads(session, row.key)
    novel = sorted(profile.novel.values(), key=lambda n: (-n.last, n.category, n.value))
    seen = [
        SeenAfterLearning(
            category=n.category,
            value=n.value,
            count=n.count,
            first_seen=_dt(n.first),
            last_seen=_dt(n.last),
            last_alerted=None if n.alerted is None else _dt(n.alerted),
        )
        for n in novel
    ]
    shared = profile.shared
    return ProfileRead(
        **summary_of(row).model_dump(),
        shared=None
        if shared is None
        else SharedFrom(
            cluster=shared["from"],
            generation=shared["generation"],
            ready_at=shared.get("ready_at"),
            imported_at=shared["imported_at"],
        ),
        workloads=[WorkloadRead.model_validate(w, from_attributes=True) for w in workloads],
        workload_count=count,
        overflow=dict(profile.overflow),
        top=TopBehaviours(
            processes=_top(
                profile.processes, top_n, parents=lambda e: dict(e.parents), hashes=lambda e: dict(e.hashes)
            ),
            destinations=_top(profile.destinations, top_n),
            ports=_top(profile.ports, top_n),
            files=_top(profile.files, top_n, written=lambda e: e.written),
        ),
        after_learning=[s for s in seen if not s.category.startswith("drift.")][:MAX_SEEN_AFTER_LEARNING],
        drift=[s for s in seen if s.category.startswith("drift.")][:MAX_SEEN_AFTER_LEARNING],
        features=await anomaly_repo.feature_baselines(session, row.key),
    )


async def reset(session: AsyncSession, row: ProfileRow) -> ProfileRow:
    """Back to learning from the next event, behaviour cleared, generation + 1 (running workers
    see the new generation in their next lookup and reload it). Flushed, not committed."""
    profile = Profile.from_json(row.data, _READ_LIMITS, row.generation)
    profile.reset()
    await repo.reset_profile(session, row, profile.to_json(), profile.summary())
    # the workloads' window baselines learn again too (a running worker sees their rows gone)
    await anomaly_repo.reset(session, profile=row.key)
    await session.refresh(row)
    return row
