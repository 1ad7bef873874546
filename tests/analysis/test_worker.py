"""The worker end to end with the real Redis and Postgres: envelopes on ``<prefix>:ingest:events``
in, findings in Postgres and on ``<prefix>:analysis:findings`` out, poison in the DLQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_analysis.worker import AnalysisWorker, make_detectors, replay_findings
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine
from qcdr_common.streams import (
    Envelope,
    dlq_key,
    new_envelope,
    publish,
    publish_fields,
    read_dead_letters,
    stream_key,
)
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import analysis_settings, event_envelope, make_event, tetragon_event

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

NSENTER = {
    "process_exec": {
        "process": {
            "binary": "/usr/bin/nsenter",
            "arguments": "-t 1 -m -u -n -i -p bash",
            "pod": {"namespace": "default", "name": "privileged-pod"},
        }
    }
}


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO intel_indicators (cidr, feeds, confidence)"
                " VALUES ('198.51.100.0/24', '{feodo}', 90)"
            )
        )
    yield engine
    await engine.dispose()


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def db_ids(db: str) -> tuple[set[str], set[str], int]:
    """(finding envelope ids, published outbox envelope ids, unpublished outbox rows)."""
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        findings = {r[0] for r in await conn.fetch("SELECT envelope_id FROM analysis_findings")}
        published = {
            r[0]
            for r in await conn.fetch(
                "SELECT envelope_id FROM analysis_outbox WHERE published_at IS NOT NULL"
            )
        }
        unpublished = await conn.fetchval("SELECT count(*) FROM analysis_outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return findings, published, int(unpublished)


async def stream_envelopes(redis: Redis, key: str) -> list[Envelope]:
    return [Envelope.from_fields(fields) for _, fields in await redis.xrange(key)]


class Running:
    def __init__(self, worker: AnalysisWorker) -> None:
        self.worker = worker
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(worker.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def test_consumer_end_to_end(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    redis: Redis = redis_client
    settings = analysis_settings(redis_prefix=redis_prefix, stream_batch=50)
    events_key = stream_key(redis_prefix, "ingest:events")
    findings_key = stream_key(redis_prefix, "analysis:findings")

    falco = [make_event(source="falco", namespace=f"ns-{i % 3}") for i in range(120)]
    qualys = [make_event(source="qualys", category="Crypto_Mining", severity="high") for _ in range(30)]
    tetragon = [tetragon_event(NSENTER) for _ in range(20)]
    intel = [make_event(source="hubble", category="flow", network={"ip": "198.51.100.9"}) for _ in range(5)]
    quiet = [make_event(source="hubble", category="flow") for _ in range(25)]
    envelopes = [event_envelope(e) for e in falco + qualys + tetragon + intel + quiet]
    poisoned = new_envelope(
        "ingest.event_observed",
        {"id": "x"},
        source="ingest",
        cluster_id="test",
        occurred_at=envelopes[0].occurred_at,
    )
    await publish(redis, events_key, [*envelopes[:100], poisoned, *envelopes[100:]], maxlen=100_000)
    await publish_fields(
        redis, [(events_key, {b"type": b"ingest.event_observed", b"data": b"{not json"})], 100_000
    )
    expected = len(falco) + len(qualys) + len(tetragon) + len(intel)

    running = Running(AnalysisWorker(settings, engine, redis))

    async def settled() -> bool:
        ids, published, _ = await db_ids(db)
        dead = await redis.xlen(dlq_key(redis_prefix, "ingest:events"))
        return (
            len(ids) == expected
            and published == ids
            and dead == 2
            and await redis.xlen(findings_key) >= expected
        )

    try:
        await wait_for(settled)
    finally:
        await running.close()

    ids, published, unpublished = await db_ids(db)
    on_stream = await stream_envelopes(redis, findings_key)
    assert {e.id for e in on_stream} == ids
    assert unpublished == 0
    assert all(e.type == "analysis.finding_raised" for e in on_stream)
    kinds = sorted(e.payload["kind"] for e in on_stream)
    assert kinds.count("source") == 150
    assert kinds.count("attack_technique") == 20
    assert kinds.count("intel_match") == 5
    letters = await read_dead_letters(redis, redis_prefix, "ingest:events")
    assert len(letters) == 2
    by_envelope = {letter.envelope.id if letter.envelope else None: letter for letter in letters}
    assert "payload is not a SecurityEvent" in by_envelope[poisoned.id].error
    assert by_envelope[poisoned.id].deliveries == settings.stream_max_deliveries
    assert "invalid envelope" in by_envelope[None].error
    pending = await redis.xpending(events_key, "analysis")
    assert pending["pending"] == 0

    # a restart changes nothing: everything was acknowledged, and redelivery would be skipped
    running = Running(AnalysisWorker(settings, engine, redis))
    await asyncio.sleep(0.5)
    await running.close()
    assert await db_ids(db) == (ids, published, 0)
    assert await redis.xlen(findings_key) == len(on_stream)

    # replay: every finding again, under its original envelope id
    assert await replay_findings(settings, engine, redis, None) == expected
    replayed = await stream_envelopes(redis, findings_key)
    assert len(replayed) == 2 * len(on_stream)
    assert {e.id for e in replayed[len(on_stream) :]} == ids


async def test_replay_since_and_after_the_outbox_was_purged(
    db: str, engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    redis: Redis = redis_client
    settings = analysis_settings(redis_prefix=redis_prefix)
    await publish(
        redis,
        stream_key(redis_prefix, "ingest:events"),
        [event_envelope(make_event()) for _ in range(10)],
        1000,
    )
    running = Running(AnalysisWorker(settings, engine, redis))
    findings_key = stream_key(redis_prefix, "analysis:findings")
    try:
        await wait_for(lambda: _xlen_at_least(redis, findings_key, 10))
    finally:
        await running.close()
    ids, _, _ = await db_ids(db)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM analysis_outbox WHERE id % 2 = 0"))  # purged
    assert await replay_findings(settings, engine, redis, None) == 10
    assert {e.id for e in (await stream_envelopes(redis, findings_key))[10:]} == ids
    future = (await _now(engine)).replace(year=2100)
    assert await replay_findings(settings, engine, redis, future) == 0


async def _xlen_at_least(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) >= n


async def _now(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT now()"))).scalar_one()


async def test_serve_alone_consumes_and_serves(
    db: str, engine: AsyncEngine, redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    """``consume_in_app`` (the default): the app runs the consumer and the relay beside the API."""
    redis: Redis = redis_client
    settings = analysis_settings(
        database_url=db, redis_url=redis_url, redis_prefix=redis_prefix, consume_in_app=True
    )
    token = "read-write-token-0123456789"
    app = create_app(settings, auth=ApiAuthSettings(token=SecretStr(token)))
    event = tetragon_event(NSENTER)
    await publish(redis, stream_key(redis_prefix, "ingest:events"), [event_envelope(event)], 1000)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://analysis") as client:
            headers = {"Authorization": f"Bearer {token}"}

            async def listed() -> bool:
                items = (await client.get("/v1/findings", headers=headers)).json()["items"]
                return [item["evidence_event_ids"] for item in items] == [[event.id]]

            await wait_for(listed)
            await wait_for(lambda: _xlen_at_least(redis, stream_key(redis_prefix, "analysis:findings"), 1))
            assert (await client.get("/readyz")).status_code == 200


def test_detector_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCDR_DETECTORS__INTEL_MATCH__REPUTATION_THRESHOLD", "80")
    monkeypatch.setenv("QCDR_DISABLED_DETECTORS", '["source"]')
    detectors = make_detectors(analysis_settings())
    assert detectors.names == [
        "attack_rules",
        "behaviour_profile",
        "dga",
        "domain_intel",
        "http_rules",
        "intel_match",
        "workload_anomaly",
    ]
    (intel,) = [a for a in detectors.active if a.detector.name == "intel_match"]
    assert intel.state.config.reputation_threshold == 80
