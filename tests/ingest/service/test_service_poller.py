"""The Qualys CDR poller against the API double, with its watermark in PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import OutboxRelay, stream_key
from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.demo_data import generate_findings
from qcdr_ingest.qualys.double import DoubleConfig, QualysDouble, serve_double
from qcdr_ingest.qualys.normalize import MalformedFindingError, normalize_finding
from qcdr_ingest.qualys.poller import WATERMARK, CdrPoller
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.ingest.service.conftest import MakeClient, eventually

pytestmark = [pytest.mark.db, pytest.mark.redis]

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def good_uuids(findings: list[Any]) -> set[str]:
    found = set()
    for raw in findings:
        with contextlib.suppress(MalformedFindingError):
            found.add(normalize_finding(raw).id)
    return found


@pytest.fixture
def double() -> Iterator[tuple[QualysDouble, str]]:
    server = QualysDouble(DoubleConfig(findings=generate_findings(600, 7, NOW), max_page_size=200))
    with serve_double(server) as url:
        yield server, url


@pytest.fixture
async def engine(ingest_database_url: str) -> Any:
    engine = make_engine(ingest_database_url)
    yield engine
    await engine.dispose()


def poller(engine: AsyncEngine, qualys: QualysSettings, clock: Clock) -> CdrPoller:
    return CdrPoller(
        engine,
        make_session_factory(engine),
        qualys,
        interval=timedelta(minutes=5),
        overlap=timedelta(minutes=10),
        lookback=timedelta(hours=24),
        cluster_id="prod",
        clock=clock,
    )


@pytest.fixture
def qualys_with_odd_findings() -> Iterator[str]:
    found = generate_findings(20, 7, NOW, malformed_ratio=0)
    found[5] = {**found[5], "destinationPort": "\u00b2"}  # str.isdigit() is true, int() refuses it
    found[6] = {**found[6], "timestamp": "0001-01-01T00:00:00+01:00"}  # before year 1 in UTC
    with serve_double(QualysDouble(DoubleConfig(findings=found, max_page_size=200))) as url:
        yield url


async def test_an_odd_finding_does_not_stop_the_poller(
    db: asyncpg.Connection,
    engine: AsyncEngine,
    qualys_with_odd_findings: str,
    make_settings: Callable[..., QualysSettings],
) -> None:
    """Before, a ValueError left poll_once: nothing of the window was stored, the watermark stayed,
    and every later cycle read the same finding and failed again (found in a review)."""
    result = await poller(engine, make_settings(gateway_url=qualys_with_odd_findings), Clock(NOW)).poll_once()
    assert (result.stored, result.malformed) == (19, 1)  # the odd port is dropped, the time is not
    assert await db.fetchval("SELECT count(*) FROM ingest_events") == 19
    assert await db.fetchval("SELECT watermark FROM ingest_watermarks WHERE name = $1", WATERMARK) == NOW


async def test_polls_store_once_and_move_the_watermark(
    db: asyncpg.Connection,
    engine: AsyncEngine,
    double: tuple[QualysDouble, str],
    make_settings: Callable[..., QualysSettings],
    redis_client: Redis,
    redis_prefix: str,
) -> None:
    server, url = double
    expected = good_uuids(server.store.query(0, 2**62, None, None))
    clock = Clock(NOW)
    cdr = poller(engine, make_settings(gateway_url=url), clock)

    first = await cdr.poll_once()
    assert first.error is None
    assert first.stored == len(expected) > 500
    assert first.malformed > 0  # the demo data's deliberately broken findings
    ids = {r["id"] for r in await db.fetch("SELECT id FROM ingest_events WHERE source = 'qualys'")}
    assert ids == expected  # a finding's uuid is its event id
    assert await db.fetchval("SELECT count(*) FROM ingest_outbox") == len(expected)
    row = await db.fetchrow("SELECT watermark, details FROM ingest_watermarks WHERE name = $1", WATERMARK)
    assert row["watermark"] == NOW

    # five minutes later: the overlap re-reads the last ten minutes, nothing is stored twice;
    # three findings arrived since
    arrivals = generate_findings(3, 99, NOW + timedelta(minutes=4), malformed_ratio=0)
    server.store.insert(
        arrivals, newest_ms=_ms(NOW + timedelta(minutes=4)), oldest_ms=_ms(NOW + timedelta(minutes=1))
    )
    clock.now = NOW + timedelta(minutes=5)
    second = await cdr.poll_once()
    assert second.start == NOW - timedelta(minutes=10)
    assert second.stored == 3
    assert second.duplicates == second.fetched - second.malformed - 3
    assert await db.fetchval("SELECT count(*) FROM ingest_events") == len(expected) + 3
    assert await db.fetchval("SELECT count(*) FROM ingest_outbox") == len(expected) + 3
    assert await db.fetchval("SELECT watermark FROM ingest_watermarks") == clock.now

    relay = OutboxRelay(engine, redis_client, OUTBOX, prefix=redis_prefix, maxlen=100_000)
    assert await relay.publish_pending() == len(expected) + 3
    assert await redis_client.xlen(stream_key(redis_prefix, "ingest:events")) == len(expected) + 3


async def test_a_failed_poll_keeps_the_watermark(
    db: asyncpg.Connection,
    engine: AsyncEngine,
    double: tuple[QualysDouble, str],
    make_settings: Callable[..., QualysSettings],
) -> None:
    _, url = double
    clock = Clock(NOW)
    assert (await poller(engine, make_settings(gateway_url=url), clock).poll_once()).error is None
    clock.now = NOW + timedelta(hours=1)
    failed = await poller(
        engine, make_settings(gateway_url=url, password="wrong-password"), clock
    ).poll_once()
    assert failed.error is not None
    assert failed.stored == 0
    assert await db.fetchval("SELECT watermark FROM ingest_watermarks") == NOW


async def test_one_replica_polls_at_a_time(
    engine: AsyncEngine,
    db: asyncpg.Connection,
    double: tuple[QualysDouble, str],
    make_settings: Callable[..., QualysSettings],
) -> None:
    _, url = double
    await db.execute("SELECT pg_advisory_lock(hashtext('qcdr-ingest:qualys-cdr'))")
    try:
        assert (await poller(engine, make_settings(gateway_url=url), Clock(NOW)).poll_once()).skipped
    finally:
        await db.execute("SELECT pg_advisory_unlock(hashtext('qcdr-ingest:qualys-cdr'))")
    assert await db.fetchval("SELECT count(*) FROM ingest_events") == 0


async def test_the_app_polls_when_credentials_are_set(
    make_client: MakeClient, db: asyncpg.Connection, make_settings: Callable[..., QualysSettings]
) -> None:
    findings = generate_findings(50, 3, datetime.now(UTC) - timedelta(minutes=1), malformed_ratio=0)
    with serve_double(DoubleConfig(findings=findings)) as url:
        async with make_client(background_workers=True, qualys=make_settings(gateway_url=url)) as (_, app):
            assert app.state.workers.poller is not None

            async def stored() -> bool:
                return bool(
                    await db.fetchval("SELECT count(*) FROM ingest_events WHERE source = 'qualys'") == 50
                )

            await eventually(stored)
    # no credentials (the Qualys fixtures clear QUALYS_* from the environment): no poller
    async with make_client(background_workers=True, qualys=QualysSettings()) as (_, app):
        assert app.state.workers.poller is None
        assert app.state.workers.scheduler is None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_replicas_share_the_interval(
    engine: AsyncEngine,
    db: asyncpg.Connection,
    double: tuple[QualysDouble, str],
    make_settings: Callable[..., QualysSettings],
) -> None:
    """Two replicas on their own schedules: one poll of Qualys per interval, not one per replica."""
    server, url = double
    clock = Clock(NOW)
    a, b = (poller(engine, make_settings(gateway_url=url), clock) for _ in range(2))
    assert not (await a.poll_once()).skipped
    asked = server.stats.findings_requests
    clock.now = NOW + timedelta(minutes=2)  # b's timer, two minutes after a's
    assert (await b.poll_once()).skipped
    assert server.stats.findings_requests == asked  # Qualys was not asked again
    clock.now = NOW + timedelta(minutes=5)  # a's next turn
    assert not (await a.poll_once()).skipped
    clock.now = NOW + timedelta(minutes=12)  # a is gone: b's next timer finds the last poll old
    assert not (await b.poll_once()).skipped
    assert await db.fetchval("SELECT updated_at FROM ingest_watermarks") == clock.now
