"""Detector state that batches leave unsaved for a while (profile counts, anomaly window counts) is
saved when the stream goes quiet and at a clean stop, but not by a replica that lost its lease.
Before the idle saver only a later batch wrote it, so on a quiet stream a stop lost it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from qcdr_analysis.findings.idle_save import IdleSaver
from qcdr_analysis.worker import AnalysisWorker
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import publish, stream_key
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import T0, analysis_settings, event_envelope
from tests.analysis.profiles_factory import HOURS, PROFILE, exec_event
from tests.analysis.test_profiles_store import empty_profile_tables
from tests.analysis.test_worker import Running, wait_for

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

ONLY_PROFILES = frozenset({"workload_anomaly", "attack_rules", "intel_match", "source"})
ONLY_WINDOWS = frozenset({"behaviour_profile", "attack_rules", "intel_match", "source"})


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    await empty_profile_tables(db)
    engine = make_engine(db)
    yield engine
    await engine.dispose()
    await empty_profile_tables(db)


async def stored_sh_count(db: str) -> int | None:
    """How often the stored profile saw ``/bin/sh`` run."""
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        data = await conn.fetchval("SELECT data FROM analysis_profiles WHERE key = $1", PROFILE)
    finally:
        await conn.close()
    if data is None:
        return None
    return int((json.loads(data) if isinstance(data, str) else data)["processes"]["/bin/sh"][0])


async def stored_windows(db: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT key, state FROM analysis_baselines")
    finally:
        await conn.close()
    return {r["key"]: json.loads(bytes(r["state"]))["buckets"] for r in rows}


async def _start_on_one_exec(
    engine: AsyncEngine,
    redis: Redis,
    prefix: str,
    detectors: dict[str, Any],
    disabled: frozenset[str],
    idle_s: float,
) -> tuple[AnalysisWorker, Running, str]:
    """One ``/bin/sh`` exec published, and a worker running the given stateful detector on it."""
    settings = analysis_settings(
        redis_prefix=prefix,
        idle_save_s=idle_s,
        detectors=detectors,
        disabled_detectors=disabled,
        correlation_enabled=False,
    )
    key = stream_key(prefix, "ingest:events")
    await publish(redis, key, [event_envelope(exec_event("/bin/sh", T0))], maxlen=1000)
    worker = AnalysisWorker(settings, engine, redis)
    return worker, Running(worker), key


async def _profile_with_unsaved_count(
    db: str, engine: AsyncEngine, redis: Redis, prefix: str, *, flush: str, idle_s: float
) -> tuple[AnalysisWorker, Running]:
    """A running worker whose profile counts two ``/bin/sh`` runs and has saved one."""
    detectors = {"behaviour_profile": {"learning_period": "PT48H", "count_flush_interval": flush}}
    worker, running, key = await _start_on_one_exec(engine, redis, prefix, detectors, ONLY_PROFILES, idle_s)
    await wait_for(lambda: _is(stored_sh_count(db), 1), 20)  # a new profile: saved with its batch
    await publish(redis, key, [event_envelope(exec_event("/bin/sh", T0 + HOURS))], maxlen=1000)
    store = worker.detectors.state_of("behaviour_profile").store

    async def counted() -> bool:
        profile = store.get(PROFILE)
        return profile is not None and profile.events == 2

    await wait_for(counted, 20)
    return worker, running


async def test_profile_counts_are_saved_once_the_stream_goes_quiet(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    _, running = await _profile_with_unsaved_count(
        db, engine, redis_client, redis_prefix, flush="PT0.5S", idle_s=0.2
    )
    try:
        await wait_for(lambda: _is(stored_sh_count(db), 2), 10)  # no further batch comes
    finally:
        await running.close()


async def test_a_clean_stop_saves_counts_not_due_yet(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    _, running = await _profile_with_unsaved_count(
        db, engine, redis_client, redis_prefix, flush="PT1H", idle_s=0.2
    )
    try:
        assert await stored_sh_count(db) == 1  # not due for an hour
    finally:
        await running.close()  # SIGTERM, or the lease handed over
    assert await stored_sh_count(db) == 2


@pytest.mark.parametrize("checkpoint_every", ["PT0.5S", "PT1H"])
async def test_anomaly_window_counts_are_saved_when_quiet_or_at_stop(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str, checkpoint_every: str
) -> None:
    redis: Redis = redis_client
    detectors = {"workload_anomaly": {"learning_period": "PT2H", "checkpoint_every": checkpoint_every}}
    worker, running, key = await _start_on_one_exec(engine, redis, redis_prefix, detectors, ONLY_WINDOWS, 0.2)
    state = worker.detectors.state_of("workload_anomaly")
    try:
        await wait_for(lambda: _is(_count(stored_windows(db)), 1), 20)  # a new workload: saved at once
        more = [event_envelope(exec_event("/bin/sh", T0 + (i + 1) * HOURS / 3600)) for i in range(5)]
        await publish(redis, key, more, maxlen=1000)
        [window] = state.engine.states.values()
        await wait_for(lambda: _is_value(sum(sum(b.counts) for b in window.buckets.values()), 6), 20)
        if checkpoint_every == "PT0.5S":  # due: written while running, with no further batch
            await wait_for(lambda: _is(_count(stored_windows(db)), 6), 10)
        else:
            assert await _count(stored_windows(db)) == 1
    finally:
        await running.close()
    assert (await stored_windows(db))[window.key] == window.to_json()["buckets"]


async def test_a_replica_whose_gate_is_shut_writes_nothing_at_stop(engine: AsyncEngine) -> None:
    """A lost lease shuts the gate before the worker stops (leader.py): the new leader's state in
    Postgres must not be overwritten with this replica's."""
    import asyncio

    from qcdr_analysis.findings.service import DetectorSet

    detectors = DetectorSet.configure({}, ONLY_PROFILES)
    for gate_open, expected in ((False, 0), (True, 1)):
        saver = IdleSaver(
            make_session_factory(engine), detectors, idle_seconds=60, gate=lambda o=gate_open: o
        )
        stop = asyncio.Event()
        stop.set()
        await saver.run(stop)
        assert saver.saves == expected


async def _count(windows: Any) -> int:
    """Events counted in the stored window buckets (the one workload)."""
    stored = await windows
    return sum(sum(bucket["counts"]) for buckets in stored.values() for bucket in _buckets(buckets))


def _buckets(buckets: Any) -> list[Any]:
    return list(buckets.values()) if isinstance(buckets, dict) else list(buckets)


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


async def _is_value(value: Any, expected: Any) -> bool:
    return value == expected


async def test_while_postgres_is_away_the_counts_wait_in_memory(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    """An idle save that cannot reach PostgreSQL attempts nothing: the counts (their events are
    acknowledged) stay in memory and the clean stop saves them once it is back."""
    import asyncio

    worker, running = await _profile_with_unsaved_count(
        db, engine, redis_client, redis_prefix, flush="PT1H", idle_s=0.2
    )
    assert worker.saver is not None
    store = worker.detectors.state_of("behaviour_profile").store
    good = worker.saver.sessions
    away = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/test")
    try:
        worker.saver.sessions = make_session_factory(away)
        store.flush_interval = 0.0  # the counts are due: the idle saver tries
        await asyncio.sleep(1.0)  # several idle rounds
        assert store.get(PROFILE) is not None
        worker.saver.sessions = good  # PostgreSQL is back
    finally:
        await running.close()
        await away.dispose()
    assert await stored_sh_count(db) == 2


async def test_a_batch_read_as_the_stop_came_is_in_the_last_save(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    worker, running = await _profile_with_unsaved_count(
        db, engine, redis_client, redis_prefix, flush="PT1H", idle_s=0.2
    )
    store = worker.detectors.state_of("behaviour_profile").store
    running.stop.set()  # SIGTERM while the consumer waits in XREADGROUP
    key = stream_key(redis_prefix, "ingest:events")
    await publish(redis_client, key, [event_envelope(exec_event("/bin/sh", T0 + 2 * HOURS))], maxlen=1000)
    await running.close()
    profile = store.get(PROFILE)
    assert profile is not None
    assert await stored_sh_count(db) == profile.processes["/bin/sh"].count
