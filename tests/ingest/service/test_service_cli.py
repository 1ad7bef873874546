"""``qcdr-ingest replay`` and ``qcdr-ingest consume``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.streams import Envelope, OutboxRelay, stream_key
from qcdr_ingest.cli import cli, replay_events
from qcdr_ingest.events import service
from qcdr_ingest.events.repository import EventFilter
from qcdr_ingest.settings import IngestSettings, get_settings
from redis.asyncio import Redis
from typer.testing import CliRunner

from tests.ingest.events.factories import falco_alerts, tetragon_events
from tests.ingest.service.conftest import TABLES, Client, eventually, plain

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.shared]


async def envelopes(redis: Redis, key: str) -> list[Envelope]:
    return [Envelope.from_fields(fields) for _, fields in await redis.xrange(key)]


async def test_replay_republishes_under_the_original_envelope_ids(
    client: Client,
    relay: OutboxRelay,
    redis_client: Redis,
    redis_prefix: str,
    make_ingest_settings: Callable[..., IngestSettings],
    shared_path: Path,
) -> None:
    await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 12))
    await client.post("/v1/events/falco", json=list(falco_alerts(shared_path, 5)))
    assert await relay.publish_pending() == 17
    key = stream_key(redis_prefix, "ingest:events")
    original = {e.id: e for e in await envelopes(redis_client, key)}
    await redis_client.delete(key)  # the stream was trimmed, or Redis lost it

    settings = make_ingest_settings()
    assert await replay_events(settings, EventFilter()) == 17
    replayed = await envelopes(redis_client, key)
    assert {e.id for e in replayed} == set(original)
    for envelope in replayed:
        before = original[envelope.id]
        assert envelope.payload_as(SecurityEvent) == before.payload_as(SecurityEvent)
        assert (envelope.type, envelope.cluster_id, envelope.occurred_at) == (
            before.type,
            before.cluster_id,
            before.occurred_at,
        )
    times = [e.occurred_at for e in replayed]
    assert times == sorted(times)  # oldest first

    await redis_client.delete(key)
    assert await replay_events(settings, EventFilter(sources=("falco",)), dry_run=True) == 5
    assert await redis_client.exists(key) == 0
    later = EventFilter(since=datetime(2026, 3, 1, 12, 0, 6, tzinfo=UTC))
    assert await replay_events(settings, later, dry_run=True) == 6  # Tetragon events 6-11


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_replay_command(
    ingest_database_url: str, redis_url: str, redis_prefix: str, fresh_settings: None, shared_path: Path
) -> None:
    """``qcdr-ingest replay --since T``: what was received at or after T, under the original ids."""

    async def prepare() -> list[str]:
        connection = await asyncpg.connect(plain(ingest_database_url))
        try:
            await connection.execute(f"TRUNCATE {', '.join(TABLES)}")
            for i, when in enumerate(
                ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z")
            ):
                await connection.execute(
                    "INSERT INTO ingest_events"
                    " (id, source, category, severity, event_time, payload, received_at)"
                    " VALUES ($1, 'test', 'c', 'low', $2, $3::jsonb, $2)",
                    f"e{i}",
                    datetime.fromisoformat(when),
                    orjson.dumps(
                        {
                            "id": f"e{i}",
                            "source": "test",
                            "category": "c",
                            "severity": "low",
                            "event_time": when,
                        }
                    ).decode(),
                )
            return [str(r["id"]) for r in await connection.fetch("SELECT id FROM ingest_events ORDER BY id")]
        finally:
            await connection.close()

    async def published() -> list[Envelope]:
        redis = Redis.from_url(redis_url)
        try:
            return await envelopes(redis, stream_key(redis_prefix, "ingest:events"))
        finally:
            await redis.aclose()

    assert asyncio.run(prepare()) == ["e0", "e1", "e2"]
    env = {
        "DATABASE_URL": ingest_database_url,
        "REDIS_URL": redis_url,
        "QCDR_REDIS_PREFIX": redis_prefix,
        "QCDR_LOG_LEVEL": "WARNING",
    }
    result = CliRunner().invoke(cli, ["replay", "--since", "2026-03-01T11:00:00Z"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-published 2 envelopes" in result.output
    replayed = asyncio.run(published())
    assert [e.payload_as(SecurityEvent).id for e in replayed] == ["e1", "e2"]
    received = datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert replayed[0].id == service.envelope_id("e1", service.millis(received))

    get_settings.cache_clear()  # the CLI reads the environment once per process
    broken = CliRunner().invoke(
        cli, ["replay"], env={**env, "DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/x"}
    )
    assert broken.exit_code == 1
    assert "pw@" not in broken.output


async def test_consume_publishes_the_outbox_and_stops_on_sigterm(
    db: asyncpg.Connection, ingest_database_url: str, redis_url: str, redis_client: Redis, redis_prefix: str
) -> None:
    # a row left unpublished by a crashed process: consume's relay publishes it at start-up
    envelope_json = (
        b'{"id":"0190f000-0000-7000-8000-000000000001","type":"ingest.event_observed","version":1,'
        b'"source":"ingest","cluster_id":"c","occurred_at":"2026-03-01T12:00:00Z",'
        b'"emitted_at":"2026-03-01T12:00:00Z","correlation_id":"x","causation_id":null,"payload":{}}'
    )
    await db.execute(
        "INSERT INTO ingest_outbox (envelope_id, stream, type, data) VALUES ($1, 'ingest:events', $2, $3)",
        "0190f000-0000-7000-8000-000000000001",
        "ingest.event_observed",
        envelope_json,
    )
    env = {
        **os.environ,
        "DATABASE_URL": ingest_database_url,
        "REDIS_URL": redis_url,
        "QCDR_REDIS_PREFIX": redis_prefix,
        "QCDR_LOG_LEVEL": "WARNING",
        "QCDR_CONSUME_METRICS_PORT": "0",
    }
    for name in ("QUALYS_USERNAME", "QUALYS_PASSWORD", "QUALYS_ACCESS_TOKEN", "QCDR_INTEL_ENABLED"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qcdr_ingest", "consume", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        key = stream_key(redis_prefix, "ingest:events")

        async def published() -> bool:
            return bool(await redis_client.xlen(key) == 1)

        await eventually(published, within_s=20)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode == 0, stderr.decode()[-2000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert await db.fetchval("SELECT count(*) FROM ingest_outbox WHERE published_at IS NULL") == 0
