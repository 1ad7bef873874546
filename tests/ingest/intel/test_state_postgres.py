"""The services' intel state in PostgreSQL (real database, real migrations)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_ingest.intel.fetch import FeedFetcher
from qcdr_ingest.intel.model import FeedAttempt, FeedSpec, FeedStatus, Reputation, StoredFeed
from qcdr_ingest.intel.state_postgres import (
    FeedStateRepository,
    FeedStateRow,
    PostgresFeedStateStore,
    PostgresReputationCache,
)
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.ingest.intel.conftest import T0, FakeClock

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]


def feed(**overrides: object) -> StoredFeed:
    values: dict[str, object] = {
        "name": "blocklist-de",
        "url": "https://lists.blocklist.de/lists/all.txt",
        "body": b"192.0.2.1\n192.0.2.2\n",
        "etag": '"v1"',
        "last_modified": "Sat, 28 Feb 2026 06:00:00 GMT",
        "fetched_at": T0,
        "attempted_at": T0,
    }
    values.update(overrides)
    return StoredFeed.model_validate(values)


async def test_feed_state_round_trip(intel_sessions: Sessions) -> None:
    store = PostgresFeedStateStore(intel_sessions)
    assert await store.load("blocklist-de") is None
    await store.save(feed())
    restarted = PostgresFeedStateStore(intel_sessions)
    assert await restarted.load("blocklist-de") == feed()
    # a second save replaces the row (INSERT … ON CONFLICT DO UPDATE)
    newer = feed(
        body=b"192.0.2.3\n",
        etag='"v2"',
        fetched_at=T0 + timedelta(hours=1),
        attempted_at=T0 + timedelta(hours=1),
    )
    await restarted.save(newer)
    assert await PostgresFeedStateStore(intel_sessions).load("blocklist-de") == newer


async def test_record_failure_keeps_the_body(intel_sessions: Sessions) -> None:
    store = PostgresFeedStateStore(intel_sessions)
    await store.save(feed())
    later = T0 + timedelta(hours=3)
    await store.record_failure(
        "blocklist-de", "https://other.example/x", later, "HTTP 500 Internal Server Error"
    )
    assert await store.load("blocklist-de") == feed(
        attempted_at=later, last_error="HTTP 500 Internal Server Error"
    )
    assert await store.last_attempt("blocklist-de") == FeedAttempt(
        name="blocklist-de", url=feed().url, attempted_at=later, error="HTTP 500 Internal Server Error"
    )


async def test_a_feed_that_never_succeeded(intel_sessions: Sessions) -> None:
    store = PostgresFeedStateStore(intel_sessions)
    await store.record_failure("new", "https://a.example/1", T0, "timed out after 30s")
    await store.record_failure("new", "https://a.example/2", T0 + timedelta(minutes=5), "HTTP 404 Not Found")
    assert await store.load("new") is None
    assert await store.last_attempt("new") == FeedAttempt(
        name="new",
        url="https://a.example/2",
        attempted_at=T0 + timedelta(minutes=5),
        error="HTTP 404 Not Found",
    )
    await store.save(feed(name="new", url="https://a.example/2"))
    loaded = await store.load("new")
    assert loaded is not None
    assert loaded.last_error is None


async def test_the_table_refuses_a_body_without_fetched_at(intel_sessions: Sessions) -> None:
    async with intel_sessions() as session:
        session.add(FeedStateRow(name="odd", url="https://a.example", body=b"x", attempted_at=T0))
        with pytest.raises(IntegrityError, match="ck_intel_feed_state_body_has_fetched_at"):
            await session.flush()


async def test_repository_writes_share_the_callers_transaction(intel_sessions: Sessions) -> None:
    async with intel_sessions() as session, session.begin():
        repo = FeedStateRepository(session)
        await repo.upsert(feed(name="a"))
        await repo.record_failure("a", feed().url, T0 + timedelta(minutes=1), "boom")
        row = await repo.get("a")
        assert row is not None
        assert row.last_error == "boom"
        assert row.body == feed().body
        await session.rollback()  # the caller decides: nothing was committed
    assert await PostgresFeedStateStore(intel_sessions).load("a") is None


# ---------------------------------------------------------------------- reputation


def answer(ip: str, score: int, **overrides: object) -> Reputation:
    values: dict[str, object] = {"ip": ip, "score": score, "checked_at": T0}
    values.update(overrides)
    return Reputation.model_validate(values)


async def test_reputation_round_trip(intel_sessions: Sessions) -> None:
    full = answer(
        "45.95.0.1",
        90,
        total_reports=321,
        usage_type="Data Center/Web Hosting/Transit",
        country_code="NL",
        is_whitelisted=False,
        is_tor=True,
        last_reported_at=T0 - timedelta(days=2),
    )
    await PostgresReputationCache(intel_sessions).put_many(
        [full, answer("2001:DB8::1", 0), answer("8.8.8.8", 0)]
    )
    restarted = PostgresReputationCache(intel_sessions)
    found = await restarted.get_many(["45.95.0.1", "2001:db8:0::1", "2001:DB8::1", "192.0.2.1", "nonsense"])
    assert found == {
        "45.95.0.1": full,
        "2001:db8:0::1": answer("2001:db8::1", 0),
        "2001:DB8::1": answer("2001:db8::1", 0),
    }
    assert await restarted.get_many([]) == {}
    assert await restarted.get_many(["x"]) == {}


async def test_reputation_upsert_keeps_the_newest_answer(intel_sessions: Sessions) -> None:
    cache = PostgresReputationCache(intel_sessions)
    await cache.put_many([answer("45.95.0.2", 10, checked_at=T0 + timedelta(hours=1))])
    await cache.put_many([answer("45.95.0.2", 80)])  # older than what is stored: ignored
    await cache.put_many(
        [answer("45.95.0.3", 5), answer("45.95.0.3", 60, checked_at=T0 + timedelta(minutes=1))]
    )
    await cache.put_many([answer("45.95.0.3", 70, checked_at=T0 + timedelta(minutes=2), total_reports=9)])
    found = await cache.get_many(["45.95.0.2", "45.95.0.3"])
    assert (found["45.95.0.2"].score, found["45.95.0.3"].score, found["45.95.0.3"].total_reports) == (
        10,
        70,
        9,
    )


async def test_reputation_in_bulk(intel_sessions: Sessions) -> None:
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(2500)]  # more than one chunk
    cache = PostgresReputationCache(intel_sessions)
    await cache.put_many([answer(ip, i % 101) for i, ip in enumerate(ips)])
    found = await cache.get_many(ips)
    assert len(found) == 2500
    assert found[ips[2400]].score == 2400 % 101


async def test_reputation_rejects_non_ips(intel_sessions: Sessions) -> None:
    with pytest.raises(ValueError, match=r"not an IP address: '10\.0\.0\.0/8'"):
        await PostgresReputationCache(intel_sessions).put_many([answer("10.0.0.0/8", 1)])


# ---------------------------------------------------------------------- with the fetcher, committing


@pytest.fixture
async def committing_sessions(intel_database_url: str) -> AsyncIterator[tuple[Sessions, str]]:
    """Real commits (several connections, for concurrent fetches); rows use a unique prefix and
    are deleted at the end."""
    engine = make_engine(intel_database_url)
    sessions = make_session_factory(engine)
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    try:
        yield sessions, prefix
    finally:
        async with sessions() as session, session.begin():
            await session.execute(delete(FeedStateRow).where(FeedStateRow.name.startswith(prefix)))
        await engine.dispose()


async def test_fetcher_on_postgres_concurrently(
    committing_sessions: tuple[Sessions, str], tmp_path: Path, clock: FakeClock
) -> None:
    sessions, prefix = committing_sessions
    specs = []
    for i in range(6):
        source = tmp_path / f"list-{i}.txt"
        source.write_bytes(f"192.0.2.{i + 1}\n".encode() if i else b"# empty\n")
        specs.append(FeedSpec(name=f"{prefix}{i}", url=source.as_uri(), category="test", may_be_empty=i == 0))
    async with httpx.AsyncClient(trust_env=False) as http:
        fetcher = FeedFetcher(PostgresFeedStateStore(sessions), http=http, clock=clock, concurrency=4)
        results = await fetcher.fetch_all(specs)
    assert [r.status for r in results] == [FeedStatus.EMPTY] + [FeedStatus.FRESH] * 5
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(FeedStateRow).where(FeedStateRow.name.startswith(prefix))
        )
    assert count == 6
    stored = await PostgresFeedStateStore(sessions).load(f"{prefix}3")
    assert stored is not None
    assert stored.body == b"192.0.2.4\n"
    assert stored.fetched_at == T0
