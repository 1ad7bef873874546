"""``behaviour_profile``: behavioural profiles per image digest, and drift against them.

One registered detector, two kinds of findings: ``anomaly`` (detector ``behaviour_profile``,
:mod:`qcdr_analysis.profiles.profiler`) and ``drift`` (detector ``drift``,
:mod:`qcdr_analysis.profiles.drift`; ``drift: false`` switches it off). Stateful: profiles live
in a :class:`ProfileStore` in memory, are loaded in ``lookup`` (one query per batch) and saved in
``persist`` with optimistic concurrency, in the batch's transaction; ``discard`` drops what a
failed transaction did not save. A workload's new image starts from the baseline of the image it
replaced (:mod:`qcdr_analysis.profiles.rollout`, found in ``lookup``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import Field, field_validator
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis import input_clocks
from qcdr_analysis.detectors import Detector, DetectorConfig, register
from qcdr_analysis.input_clocks import InputKey
from qcdr_analysis.profiles import repository as repo
from qcdr_analysis.profiles import rollout
from qcdr_analysis.profiles.features import extract
from qcdr_analysis.profiles.identity import has_identity, profile_key, workload_key
from qcdr_analysis.profiles.paths import DEFAULT_SENSITIVE, EXTRA_TECHNIQUE, SensitiveMatcher
from qcdr_analysis.profiles.profile import Limits, Profile
from qcdr_analysis.profiles.profiler import ProfilerSettings, observe
from qcdr_analysis.profiles.store import ProfileConflictError, ProfileStore

NAME = "behaviour_profile"
WATCHED: InputKey = ("events", "", "")  # one mark: the newest event time of every input
_NONE: tuple[Finding, ...] = ()


class Config(DetectorConfig):
    learning_period: timedelta = Field(
        default=timedelta(hours=48), description="Event time an image's profile learns before it scores."
    )
    inherit_on_rollout: bool = Field(
        default=True,
        description="A new image of a workload starts from the baseline of the image it replaced "
        "(same repository, ready, active within inherit_max_age) and learns rollout_learning_period.",
    )
    rollout_learning_period: timedelta = Field(
        default=timedelta(hours=1), description="Event time an inherited profile learns before it scores."
    )
    inherit_max_age: timedelta = Field(
        default=timedelta(days=14), description="A replaced image last active longer ago passes nothing on."
    )
    emit_threshold: int = Field(default=70, ge=0, le=100, description="Anomaly score (0-100) raised from.")
    realert_after: timedelta = Field(
        default=timedelta(hours=24), description="Event time before the same new behaviour raises again."
    )
    drift: bool = Field(default=True, description="Also raise drift findings (detector 'drift').")
    sensitive_paths_extra: tuple[str, ...] = Field(
        default=(),
        description="More sensitive paths: '/file', '/dir/', '**/name', '**/dir/' (component-wise).",
    )
    max_processes: int = Field(default=1024, ge=1)
    max_parents_per_process: int = Field(default=32, ge=1)
    max_hashes_per_process: int = Field(default=8, ge=1)
    max_destinations: int = Field(default=4096, ge=1)
    max_ports: int = Field(default=1024, ge=1)
    max_files: int = Field(default=4096, ge=1)
    max_workloads_per_profile: int = Field(default=256, ge=1)
    max_novel: int = Field(default=1024, ge=1, description="Behaviours seen after learning kept per profile.")
    profiles_in_memory: int = Field(default=20_000, ge=1)
    workloads_in_memory: int = Field(default=100_000, ge=1)
    learning_lateness: timedelta = Field(
        default=timedelta(hours=1),
        description="How far before a profile's first event a late event may move its learning window "
        "back; older events (a backfill, a node flushing its buffer) do not, and once the profile is "
        "ready they are compared with the baseline, not learned.",
    )
    count_flush_interval: timedelta = Field(
        default=timedelta(seconds=30),
        description="How long count-only changes of a profile may stay unsaved (lost on a crash; a "
        "quiet stream saves them after idle_save_s, a clean stop at once).",
    )
    top_n: int = Field(default=5, ge=1, le=50, description="Known behaviours an explanation lists.")

    @field_validator("learning_period", "realert_after", "rollout_learning_period", "inherit_max_age")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value


@dataclass
class State:
    config: Config
    settings: ProfilerSettings
    store: ProfileStore
    # new profile key -> the profile it starts from (found by ``lookup`` for this batch)
    successors: dict[str, Profile] = field(default_factory=dict)
    # the newest event time profiled (any image): a new image's first event far older than this
    # is a backfill, and its learning starts here (profiler._apply); kept across restarts in
    # analysis_input_clocks, loaded with the first batch, saved with the count flushes
    watched: datetime | None = None
    watched_loaded: bool = False
    watched_saved: datetime | None = None
    watched_saved_at: float = float("-inf")


def setup(config: Config) -> State:
    limits = Limits(
        processes=config.max_processes,
        parents_per_process=config.max_parents_per_process,
        hashes_per_process=config.max_hashes_per_process,
        destinations=config.max_destinations,
        ports=config.max_ports,
        files=config.max_files,
        workloads=config.max_workloads_per_profile,
        novel=config.max_novel,
    )
    extra = ((pattern, EXTRA_TECHNIQUE) for pattern in config.sensitive_paths_extra)
    settings = ProfilerSettings(
        learning_period=config.learning_period.total_seconds(),
        rollout_learning_period=config.rollout_learning_period.total_seconds(),
        learning_lateness=config.learning_lateness.total_seconds(),
        emit_threshold=config.emit_threshold,
        realert_after=config.realert_after.total_seconds(),
        limits=limits,
        drift=config.drift,
        sensitive=SensitiveMatcher((*DEFAULT_SENSITIVE, *extra)),  # a bad pattern fails here
        top_n=config.top_n,
    )
    store = ProfileStore(
        limits,
        capacity=config.profiles_in_memory,
        workload_capacity=config.workloads_in_memory,
        flush_interval=config.count_flush_interval.total_seconds(),
    )
    return State(config, settings, store)


async def lookup(session: AsyncSession, events: Sequence[SecurityEvent], state: State) -> None:
    """Load the batch's profiles that memory lacks or holds an older generation of; forget those
    deleted in Postgres. One query."""
    store = state.store
    keys = {profile_key(e.workload) for e in events if has_identity(e.workload)}
    store.begin_batch(keys)
    if not keys:
        return
    if not state.watched_loaded:
        stored = (await input_clocks.load_marks(session, NAME)).get(WATCHED)
        if stored is not None and (state.watched is None or stored > state.watched):
            state.watched = state.watched_saved = stored
        state.watched_loaded = True
    held = {key: (p.generation if (p := store.get(key)) is not None else -1) for key in keys}
    present = set()
    for key, generation, data in await repo.fetch_changed(session, held):
        present.add(key)
        if data is not None:
            store.load(Profile.from_json(data, store.limits, generation))
    for key in keys - present:
        profile = store.get(key)
        if profile is not None and profile.generation > 0:
            store.forget(key)  # deleted in Postgres: start again
    store.touch(keys)
    state.successors = {}
    new = {key for key in keys if store.get(key) is None}
    if new and state.config.inherit_on_rollout:
        state.successors = await rollout.successors(
            session, events, new, store, state.config.inherit_max_age.total_seconds()
        )


def detect(events: Sequence[SecurityEvent], state: State, _lookup: object = None) -> list[Finding]:
    store, settings = state.store, state.settings
    applied = store.applied
    findings: list[Finding] = []
    watched = state.watched
    watched_t = None if watched is None else watched.timestamp()
    for event in events:
        ident = (event.source, event.id)
        done = applied.get(ident)
        if done is None:
            done = applied[ident] = _observe(event, store, settings, state.successors, watched_t)
            if watched is None or event.event_time > watched:
                watched = state.watched = event.event_time
                watched_t = watched.timestamp()
        if done:
            findings.extend(done)
    return findings


def _observe(
    event: SecurityEvent,
    store: ProfileStore,
    settings: ProfilerSettings,
    successors: dict[str, Profile],
    watched: float | None,
) -> Sequence[Finding]:
    workload = event.workload
    if not has_identity(workload):
        return _NONE
    features = extract(event)
    if features is None:
        return _NONE
    key = profile_key(workload)
    wkey = workload_key(workload)
    t = event.event_time.timestamp()
    profile = store.get(key)
    if profile is None:  # the lookup found no row: a new image
        donor = successors.get(key)
        profile = store.create(key) if donor is None else store.add(donor.successor(key, wkey, t))
    findings, changed = observe(profile, wkey, event, features, t, settings, watched)
    store.mark(key, changed)
    store.see_workload(wkey, key, workload, t)
    return findings or _NONE


async def persist(session: AsyncSession, state: State) -> None:
    """Save what the batch changed; a profile someone else wrote meanwhile raises
    :class:`ProfileConflictError` (the batch rolls back, ``discard`` runs, it is retried)."""
    store = state.store
    now = time.monotonic()
    everything = store.all_due  # a clean stop (due() resets it)
    due = store.due(now)
    if due:
        new = [p for p in due if p.generation == 0]
        old = [p for p in due if p.generation > 0]
        inserted = await repo.insert_profiles(session, new)
        updated = await repo.update_profiles(session, old)
        lost = ({p.key for p in new} - inserted) | ({p.key for p in old} - updated)
        if lost:
            raise ProfileConflictError(lost)
        store.written(due, now)
    workloads = store.workloads_to_write()
    if workloads:
        await repo.upsert_workloads(session, workloads)
        store.workloads_written()
    watched = state.watched
    if (
        watched is not None
        and watched != state.watched_saved
        and (everything or now - state.watched_saved_at >= store.flush_interval)
    ):
        await input_clocks.save_marks(session, NAME, {WATCHED: watched})
        state.watched_saved, state.watched_saved_at = watched, now
    store.update_gauges(now)


def discard(state: State) -> None:
    state.store.discard()
    state.watched_saved = None  # its save may have been in the rolled-back transaction


def all_due(state: State) -> None:
    state.store.all_due = True


DETECTOR = register(
    Detector(
        name=NAME,
        kind=FindingKind.ANOMALY,
        config=Config,
        setup=setup,
        detect=detect,
        lookup=lookup,
        persist=persist,
        discard=discard,
        all_due=all_due,
    )
)
