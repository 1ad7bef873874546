"""A restart of the analysis service loses no profile, baseline or model: the real worker over
Redis streams and Postgres, stopped after learning and started again as a new process would be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from qcdr_analysis.worker import AnalysisWorker
from qcdr_common.contracts.events.v1 import ProcessInfo, SecurityEvent, Severity
from qcdr_common.db import make_engine
from qcdr_common.streams import publish, stream_key
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import analysis_settings, event_envelope
from tests.analysis.test_worker import Running, wait_for
from tests.analysis.test_workload_anomaly import T0, Traffic

DETECTORS: dict[str, Any] = {
    "workload_anomaly": {"learning_period": "PT2H", "refit_every": "PT1H", "checkpoint_every": "PT0S"},
    "behaviour_profile": {"learning_period": "PT2H"},
}


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    yield engine
    await engine.dispose()


async def fetch(db: str, query: str) -> list[Any]:
    connection = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def test_a_restarted_worker_carries_on_without_relearning(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    redis: Redis = redis_client
    settings = analysis_settings(
        redis_prefix=redis_prefix,
        stream_batch=500,
        detectors=DETECTORS,
        disabled_detectors=frozenset({"attack_rules", "intel_match", "source"}),
        model_refit_poll_s=0.1,
    )
    events_key = stream_key(redis_prefix, "ingest:events")
    traffic = Traffic(n=6)
    learning = [e for m in range(0, 130) for e in traffic.minute(m)[0]]
    await publish(redis, events_key, [event_envelope(e) for e in learning], maxlen=100_000)

    first = Running(AnalysisWorker(settings, engine, redis))

    async def learned() -> bool:
        try:
            pending = await redis.xpending(events_key, "analysis")
            info = await redis.xinfo_groups(events_key)
        except ResponseError:  # the group is not created yet
            return False
        models = await fetch(db, "SELECT name FROM analysis_models")
        return info[0]["lag"] == 0 and pending["pending"] == 0 and len(models) == 1

    try:
        await wait_for(learned, 60)
    finally:
        await first.close()
    profiles = await fetch(db, "SELECT key, state FROM analysis_profiles")
    baselines = await fetch(db, "SELECT key, ready FROM analysis_baselines")
    assert len(profiles) == 6
    assert {p["state"] for p in profiles} == {"ready"}
    assert len(baselines) == 6
    assert all(b["ready"] for b in baselines)

    # a new process: nothing in memory; a new binary in app0 after the restart
    second_worker = AnalysisWorker(settings, engine, redis)
    intruder = SecurityEvent(
        id="intruder",
        source="tetragon",
        category="process_exec",
        severity=Severity.INFO,
        event_time=T0 + timedelta(minutes=131),
        workload=traffic.workloads[0],
        process=ProcessInfo(path="/tmp/xmrig", parent_path="/bin/sh"),
    )
    later = [e for m in range(130, 133) for e in traffic.minute(m)[0]]
    await publish(redis, events_key, [event_envelope(e) for e in [*later, intruder]], maxlen=100_000)
    second = Running(second_worker)

    async def found() -> bool:
        rows = await fetch(
            db, "SELECT category FROM analysis_findings WHERE 'intruder' = ANY(evidence_event_ids)"
        )
        return {"anomaly.unknown_process", "drift.new_executable"} <= {r["category"] for r in rows}

    try:
        await wait_for(found, 30)
        state = second_worker.detectors.state_of("workload_anomaly")
        assert state.engine.model is not None  # loaded from Postgres, not refitted from nothing
        assert all(s.ready for s in state.engine.states.values())
    finally:
        await second.close()
    assert {p["state"] for p in await fetch(db, "SELECT state FROM analysis_profiles")} == {"ready"}
    # nothing but the intruder was new: the restart relearned nothing and alerted on nothing else
    others = await fetch(
        db, "SELECT category FROM analysis_findings WHERE NOT 'intruder' = ANY(evidence_event_ids)"
    )
    assert others == []
