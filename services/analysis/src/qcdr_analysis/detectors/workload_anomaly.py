"""``workload_anomaly``: per-workload windows scored by z-score, IQR, EWMA, Isolation Forest and
k-means (:mod:`qcdr_analysis.anomaly`). Stateful: baselines live in memory, are loaded from and
written to ``analysis_baselines`` in the batch's transaction (see the engine's docstring for
what is written when)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from qcdr_common.contracts.events.v1 import SecurityEvent, Workload
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis import input_clocks
from qcdr_analysis.anomaly import repository as repo
from qcdr_analysis.anomaly.config import WorkloadAnomalyConfig
from qcdr_analysis.anomaly.engine import WorkloadAnomalyEngine, baseline_key, owner_of
from qcdr_analysis.detectors import Detector, register
from qcdr_analysis.profiles.identity import has_identity

NAME = "workload_anomaly"


@dataclass
class State:
    engine: WorkloadAnomalyEngine
    config: WorkloadAnomalyConfig
    model_loaded: bool = False  # and the inputs' event-time marks
    last_checkpoint: float = field(default_factory=time.monotonic)


def setup(config: WorkloadAnomalyConfig) -> State:
    return State(WorkloadAnomalyEngine(config), config)


async def refresh(session: AsyncSession, state: State, workloads: Iterable[Workload]) -> None:
    """Load the baselines of these workloads that are not in memory or changed in Postgres (a
    reset through the API, another worker); forget those deleted there. One or two queries."""
    engine = state.engine
    if not state.model_loaded:
        model = await repo.load_model(session)
        if model is not None and model.features == engine.names:
            engine.install_model(model)
        engine.install_marks(await input_clocks.load_marks(session, NAME))
        state.model_loaded = True
    keys = sorted({baseline_key(w) for w in workloads if has_identity(w)})
    if not keys:
        return
    stored = await repo.generations(session, keys)
    gone = [k for k in keys if k not in stored and k in engine.states and engine.states[k].generation > 0]
    engine.forget(gone)
    stale = [k for k, g in stored.items() if k not in engine.states or engine.states[k].generation != g]
    if stale:
        engine.install_states(await repo.load_states(session, stale, state.config.reservoir_size))
    # a key nobody stored or holds: a new workload, or a new image of one (a rollout), which
    # inherits the baseline of the owner's previous image from Postgres when memory has none
    new = [k for k in keys if k not in stored and k not in engine.states]
    if new and state.config.inherit_on_rollout:
        owners = {owner_of(k) for k in new}
        engine.offer_donors(await repo.latest_states(session, owners, new, state.config.reservoir_size))


async def lookup(session: AsyncSession, events: Sequence[SecurityEvent], state: State) -> None:
    await refresh(session, state, (e.workload for e in events))


def detect(events: Sequence[SecurityEvent], state: State, _lookup: object = None) -> list[Finding]:
    return state.engine.observe_events(events)


async def persist(session: AsyncSession, state: State) -> None:
    now = time.monotonic()
    checkpoint = now - state.last_checkpoint >= state.config.checkpoint_every.total_seconds()
    states = state.engine.changed_states(checkpoint=checkpoint)
    if states:
        await repo.save_states(session, states)
    if checkpoint and state.engine.marks_moved:
        await input_clocks.save_marks(session, NAME, state.engine.marks)
        state.engine.marks_moved = False
    if checkpoint:
        state.last_checkpoint = now


def discard(state: State) -> None:
    state.engine.discard_unsaved()


def all_due(state: State) -> None:
    state.last_checkpoint = float("-inf")  # the next persist checkpoints every window's counts


DETECTOR = register(
    Detector(
        name=NAME,
        kind=FindingKind.ANOMALY,
        config=WorkloadAnomalyConfig,
        setup=setup,
        detect=detect,
        lookup=lookup,
        persist=persist,
        discard=discard,
        all_due=all_due,
    )
)
