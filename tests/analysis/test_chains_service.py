"""Attack-chain correlation inside the running service: the real Tetragon chain over Redis
Streams, a restart in the middle of it (state from the Redis checkpoint), exactly one chain
stored, and the ``/v1/chains`` API with ATT&CK names."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_analysis.worker import AnalysisWorker
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine
from qcdr_common.streams import publish, stream_key
from qcdr_ingest.events.adapters.tetragon import convert
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import analysis_settings, event_envelope, load_events
from tests.analysis.test_anomaly_service import fetch
from tests.analysis.test_worker import Running, wait_for

CHAIN_DIR = (
    "corpora/tetragon/docs/security-observability-with-ebpf/03_chapter/03_security_observability_events"
)
READ = "chains-read-token-0123456789abcdef"
PATTERN = "privileged_pod_to_exfiltration"


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    yield engine
    await engine.dispose()


def chain_envelopes(shared_path: Path) -> list[Any]:
    folder = shared_path / CHAIN_DIR
    events = sorted(
        (convert(raw, "kind") for path in sorted(folder.rglob("*.json")) for raw in load_events(path)),
        key=lambda e: e.event_time,
    )
    assert len(events) == 25
    return [event_envelope(e) for e in events]


async def chains(db: str) -> list[Any]:
    return await fetch(db, "SELECT id, category FROM analysis_findings WHERE kind = 'chain'")


async def consumed(redis: Redis, key: str) -> bool:
    try:
        info = await redis.xinfo_groups(key)
        pending = await redis.xpending(key, "analysis")
    except Exception:  # the group does not exist yet
        return False
    return bool(info) and info[0]["lag"] == 0 and pending["pending"] == 0


async def test_a_chain_split_by_a_restart_is_stored_once_and_served(
    db: str,
    engine: AsyncEngine,
    redis_client: Any,
    redis_prefix: str,
    shared_path: Path,
) -> None:
    redis: Redis = redis_client
    settings = analysis_settings(
        redis_prefix=redis_prefix,
        stream_batch=4,
        correlation_idle_flush_s=0.3,
        disabled_detectors=frozenset({"behaviour_profile", "workload_anomaly"}),
    )
    key = stream_key(redis_prefix, "ingest:events")
    envelopes = chain_envelopes(shared_path)

    await publish(redis, key, envelopes[:12], maxlen=10_000)
    first = Running(AnalysisWorker(settings, engine, redis))
    try:
        await wait_for(lambda: consumed(redis, key), 30)
    finally:
        await first.close()
    assert await chains(db) == []  # half a chain: nothing emitted

    second_worker = AnalysisWorker(settings, engine, redis)  # a new process: state from Redis
    await publish(redis, key, envelopes[12:], maxlen=10_000)
    second = Running(second_worker)

    async def one_chain() -> bool:
        return len(await chains(db)) == 1

    try:
        await wait_for(one_chain, 30)
        # the whole trace delivered again (a replay): no second chain
        await publish(redis, key, envelopes, maxlen=10_000)
        await wait_for(lambda: consumed(redis, key), 30)
        await second_worker.flusher.flush()  # type: ignore[union-attr]
    finally:
        await second.close()
    stored = await chains(db)
    assert [c["category"] for c in stored] == [f"chain.{PATTERN}"]

    auth = ApiAuthSettings(token_read=SecretStr(READ))
    app = create_app(
        analysis_settings(
            database_url=db, redis_url=settings.redis_url.get_secret_value(), redis_prefix=redis_prefix
        ),
        auth=auth,
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        headers = {"Authorization": f"Bearer {READ}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analysis", headers=headers
        ) as client:
            listed = (await client.get("/v1/chains")).json()
            (chain,) = listed["items"]
            assert chain["pattern"] == PATTERN
            names = {t["id"]: t["name"] for t in chain["techniques"]}
            assert names["T1611"] == "Escape to Host"
            assert [s["name"] for s in chain["steps"]][0:2] == ["privileged_shell", "host_namespaces"]
            assert all(s["techniques"] for s in chain["steps"])
            assert (await client.get(f"/v1/chains/{chain['id']}")).json()["id"] == chain["id"]
            assert (await client.get("/v1/chains/nope")).status_code == 404
            partial = (await client.get("/v1/chains/partial")).json()
            assert partial["live_keys"] >= 0
            assert (await client.get("/v1/chains", headers={"Authorization": ""})).status_code == 401


@pytest.fixture(autouse=True)
async def _clear_checkpoint(redis_client: Any, redis_prefix: str) -> Any:
    yield
    await redis_client.delete(
        *[
            f"{redis_prefix}:analysis:correlation:{p}"
            for p in ("partials", "buffer", "seen", "meta", "pending")
        ]
    )


async def test_a_crash_between_checkpoint_and_commit_neither_loses_nor_repeats_a_chain(
    redis_client: Any, redis_prefix: str
) -> None:
    from qcdr_analysis.correlation.checkpoint import RedisCheckpoint
    from qcdr_analysis.correlation.correlator import Correlator

    from tests.analysis.test_correlation import trace

    events = trace("reverse_shell")
    first = Correlator.from_patterns(None, RedisCheckpoint(redis_client, redis_prefix))
    await first.restore()
    emitted = first.feed(events, []) + first.flush()
    assert [c.category for c in emitted] == ["chain.reverse_shell"]
    await first.checkpoint()  # ... and the process dies before the batch commits

    second = Correlator.from_patterns(None, RedisCheckpoint(redis_client, redis_prefix))
    await second.restore()
    redelivered = second.feed(events, [])  # the uncommitted batch comes again
    assert [c.id for c in redelivered] == [emitted[0].id]  # the pending chain, once, same id
    await second.checkpoint()
    await second.committed(redelivered)

    third = Correlator.from_patterns(None, RedisCheckpoint(redis_client, redis_prefix))
    await third.restore()
    assert third.feed(events, []) + third.flush() == []  # confirmed: nothing again


async def test_a_restart_with_no_new_events_still_completes_what_the_checkpoint_holds(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str, shared_path: Path
) -> None:
    """The whole chain consumed, then the process stops before the idle flush; the new process gets
    no further event (a quiet cluster, or everything went to the old leader): its flusher must load
    the checkpoint by itself, or the chain waits for an event that may never come."""
    redis: Redis = redis_client
    key = stream_key(redis_prefix, "ingest:events")
    common = {
        "redis_prefix": redis_prefix,
        "stream_batch": 4,
        "disabled_detectors": frozenset({"behaviour_profile", "workload_anomaly"}),
    }
    await publish(redis, key, chain_envelopes(shared_path), maxlen=10_000)
    first = Running(AnalysisWorker(analysis_settings(**common, correlation_idle_flush_s=3600), engine, redis))
    try:
        await wait_for(lambda: consumed(redis, key), 30)
    finally:
        await first.close()
    assert await chains(db) == []  # the last steps wait in the checkpointed buffer

    second = Running(AnalysisWorker(analysis_settings(**common, correlation_idle_flush_s=0.2), engine, redis))
    try:
        await wait_for(lambda: _chains_at_least(db, 1), 10)
    finally:
        await second.close()
    assert [c["category"] for c in await chains(db)] == [f"chain.{PATTERN}"]


async def _chains_at_least(db: str, n: int) -> bool:
    return len(await chains(db)) >= n


async def test_the_flusher_holds_off_for_the_claim_idle_time_after_a_start(engine: AsyncEngine) -> None:
    """Entries a crashed leader read but never committed come back after the claim-idle time; a
    flush before that would make their items late, so the first flush waits for it."""
    import asyncio

    from qcdr_analysis.correlation.correlator import Correlator
    from qcdr_analysis.correlation.flusher import CorrelationFlusher
    from qcdr_analysis.findings.service import DetectorSet
    from qcdr_common.db import make_session_factory

    from tests.analysis.test_correlation import trace

    detectors = DetectorSet.configure({}, frozenset({"behaviour_profile", "workload_anomaly"}))
    detectors.correlator = Correlator.from_patterns(None)
    detectors.correlator.feed(trace("reverse_shell"), [])
    assert detectors.correlator.waiting
    flusher = CorrelationFlusher(
        make_session_factory(engine), detectors, cluster_id="c", idle_seconds=0.05, hold_s=1.0
    )
    # when each flush began, against a start taken before the flusher's own: not how many were
    # done by some moment, which a busy machine could put past the hold
    flush_started: list[float] = []
    flush = flusher.flush

    async def timed_flush() -> int:
        flush_started.append(time.monotonic())
        return await flush()

    flusher.flush = timed_flush  # type: ignore[method-assign]
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(flusher.run(stop))
    try:
        await wait_for(lambda: _true(flusher.flushes >= 1), 30)
    finally:
        stop.set()
        await task
    assert flush_started[0] - started >= 1.0  # none within the hold (idle every 0.05 s)


async def _true(value: bool) -> bool:
    return value
