"""Shared baselines (federation): take a profile another cluster learned for the same image.

A spoke's federation service fetches from the hub the ready profiles other clusters learned, by
image digest, and publishes each on ``federation:baselines``
(:class:`~qcdr_common.contracts.federation.v1.SharedBaseline`). For each one:

* no profile here for the digest: the shared one is inserted, **ready** (generation 1), so the
  first workload of the image in this cluster is scored from its first event instead of
  learning for the whole learning period;
* a **learning** profile here: replaced by the shared one (generation + 1). What it learned so
  far is dropped (a partial window is a weaker baseline, and may already hold the attack); the
  workloads it recorded are kept;
* a **ready** profile here (learned here, or taken before): never replaced.

What is taken is the baseline: processes with their parents and hashes, destinations, ports, files,
counts, overflow. The source's workloads and what it saw after learning (``novel``, with its
alert times) are that cluster's own and stay there. The profile is marked ``shared`` (source
cluster, its generation and ready time, when it was taken); the summary shows ``shared_from``,
so ``GET /v1/profiles/{key}`` tells a shared baseline from a local one, and the view
``analysis_shared_profiles`` leaves it out: a baseline is shared by the cluster that learned it,
never echoed back.

Writes go through the same repository statements as the events handler (insert at generation 1,
update over the generation read, the row locked ``FOR UPDATE``), so a worker holding an older
copy reloads it at its next lookup, or fails its write with ``ProfileConflictError`` and retries.
Taking a baseline twice changes nothing the second time (the profile is ready by then).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from qcdr_common.contracts.federation.v1 import SharedBaseline
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis.profiles import repository as repo
from qcdr_analysis.profiles.profile import READY, Limits, Profile
from qcdr_analysis.profiles.store import ProfileConflictError


class Outcome(StrEnum):
    INSERTED = "inserted"  # no profile here: the shared one, ready
    REPLACED = "replaced"  # a learning profile here: replaced by the shared one
    KEPT = "kept"  # a ready profile here: left as it is


@dataclass(frozen=True, slots=True)
class Imported:
    profile_key: str
    outcome: Outcome
    generation: int  # the row's generation afterwards

    @property
    def changed(self) -> bool:
        return self.outcome is not Outcome.KEPT


def read_baseline(baseline: SharedBaseline, limits: Limits) -> Profile:
    """The shared profile as a :class:`Profile`; ValueError when it cannot be one (a profile
    JSON this code does not read, a value of the wrong type, another key, never learned).

    The data comes from another cluster, through the hub, as it was uploaded: whatever fails to
    read it makes the envelope poison (dead-lettered with the reason), never a profile here."""
    data = baseline.data
    try:
        profile = Profile.from_json(data, limits, 0)
    except Exception as exc:  # any failure on foreign data is a bad baseline, not a crash
        raise ValueError(f"data is not a profile: {exc!r}") from None
    if profile.key != baseline.profile_key:
        raise ValueError(f"data is the profile of {profile.key!r}, not {baseline.profile_key!r}")
    if profile.first_seen is None or not data.get("ready"):
        raise ValueError("data is not a ready profile (it never finished learning)")
    # the caps bound what one image costs a worker's memory; a bigger baseline (a source with
    # larger caps, or a bad one) is refused rather than cut, which would turn known behaviour
    # into findings
    for what, size, cap in (
        ("processes", len(profile.processes), limits.processes),
        ("destinations", len(profile.destinations), limits.destinations),
        ("ports", len(profile.ports), limits.ports),
        ("files", len(profile.files), limits.files),
    ):
        if size > cap:
            raise ValueError(f"data has {size} {what}, more than this cluster's cap of {cap}")
    return profile


def _taken(baseline: SharedBaseline, limits: Limits, local: Profile | None, now: datetime) -> Profile:
    profile = read_baseline(baseline, limits)
    profile.ready = True
    profile.novel = {}
    profile.inherited = None  # the source's rollout history is its own
    profile.workloads = dict(local.workloads) if local is not None else {}
    profile.shared = {
        "from": baseline.source_cluster,
        "generation": baseline.generation,
        "ready_at": None if baseline.ready_at is None else baseline.ready_at.isoformat(),
        "imported_at": now.isoformat(),
    }
    return profile


async def import_baseline(
    session: AsyncSession, baseline: SharedBaseline, limits: Limits, now: datetime
) -> Imported:
    """Apply the rules above in ``session`` (flushed, not committed)."""
    key = baseline.profile_key
    for _ in range(2):
        row = await repo.lock_profile(session, key)
        if row is None:
            profile = _taken(baseline, limits, None, now)
            if key in await repo.insert_profiles(session, [profile]):
                return Imported(key, Outcome.INSERTED, 1)
            continue  # a worker inserted it meanwhile: read it (now locked) and decide again
        if row.state == READY:
            return Imported(key, Outcome.KEPT, row.generation)
        local = Profile.from_json(row.data, limits, row.generation)
        profile = _taken(baseline, limits, local, now)
        profile.generation = row.generation
        if key not in await repo.update_profiles(session, [profile]):
            raise ProfileConflictError([key])  # cannot happen under the row lock; retried if so
        return Imported(key, Outcome.REPLACED, row.generation + 1)
    raise ProfileConflictError([key])


def describe(imported: Imported, baseline: SharedBaseline) -> dict[str, Any]:
    """Log fields of one import."""
    return {
        "profile_key": imported.profile_key,
        "outcome": imported.outcome.value,
        "source_cluster": baseline.source_cluster,
        "source_generation": baseline.generation,
        "generation": imported.generation,
    }
