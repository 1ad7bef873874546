"""Transactional outbox and relay against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from qcdr_common.streams import (
    Envelope,
    OutboxRelay,
    enqueue,
    mark_for_replay,
    new_envelope,
    outbox_backlog,
    stream_key,
)
from redis.asyncio import Redis
from sqlalchemy import Connection, Table, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

pytestmark = [pytest.mark.db, pytest.mark.redis]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STREAM = "svc:things"


def make_envelopes(n: int) -> list[Envelope]:
    return [
        new_envelope("svc.thing_happened", {"n": i}, source="svc", cluster_id="c1", occurred_at=T0)
        for i in range(n)
    ]


@pytest.fixture
def redis(redis_client: object) -> Redis:
    return cast(Redis, redis_client)


async def commit(engine: AsyncEngine, table: Table, envelopes: list[Envelope]) -> None:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        await enqueue(session, table, STREAM, envelopes)


async def published_ids(redis: Redis, prefix: str) -> list[str]:
    entries: Any = await redis.xrange(stream_key(prefix, STREAM))
    return [Envelope.from_fields(fields).id for _, fields in entries]


async def wait_for_published(redis: Redis, prefix: str, n: int) -> None:
    for _ in range(500):
        if await redis.xlen(stream_key(prefix, STREAM)) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} entries published")


async def test_rolled_back_enqueue_publishes_nothing(
    engine: AsyncEngine, table: Table, redis: Redis, redis_prefix: str
) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue(session, table, STREAM, make_envelopes(3))
        await session.rollback()  # the state change failed: nothing of the transaction stays
    assert await outbox_backlog(engine, table) == 0
    relay = OutboxRelay(engine, redis, table, prefix=redis_prefix, maxlen=10_000)
    assert await relay.publish_pending() == 0
    assert await redis.exists(stream_key(redis_prefix, STREAM)) == 0


async def test_enqueue_is_idempotent_and_rows_carry_the_envelope(
    engine: AsyncEngine, table: Table, redis: Redis, redis_prefix: str
) -> None:
    envelopes = make_envelopes(2)
    await commit(engine, table, envelopes)
    await commit(engine, table, envelopes)  # a handler run twice enqueues the same ids again
    await commit(engine, table, [])
    assert await outbox_backlog(engine, table) == 2
    relay = OutboxRelay(engine, redis, table, prefix=redis_prefix, maxlen=10_000)
    assert await relay.publish_pending() == 2
    assert await published_ids(redis, redis_prefix) == [e.id for e in envelopes]
    entries: Any = await redis.xrange(stream_key(redis_prefix, STREAM))
    assert Envelope.from_fields(entries[0][1]) == envelopes[0]
    assert entries[0][1][b"type"] == b"svc.thing_happened"
    assert await outbox_backlog(engine, table) == 0


async def test_concurrent_relays_publish_each_committed_row_once(
    engine: AsyncEngine, table: Table, redis: Redis, redis_prefix: str
) -> None:
    envelopes = make_envelopes(1500)
    await commit(engine, table, envelopes)
    relays = [
        OutboxRelay(engine, redis, table, prefix=redis_prefix, maxlen=10_000, batch=100) for _ in range(2)
    ]
    counts = await asyncio.gather(*(r.publish_pending() for r in relays), relays[0].publish_pending())
    assert sum(counts) == 1500
    ids = await published_ids(redis, redis_prefix)
    assert len(ids) == 1500
    assert set(ids) == {e.id for e in envelopes}
    async with engine.connect() as conn:
        unpublished = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.published_at.is_(None))
        )
    assert unpublished == 0


async def test_relay_publishes_the_backlog_at_start_up_then_on_notify(
    engine: AsyncEngine, table: Table, redis: Redis, redis_prefix: str
) -> None:
    backlog = make_envelopes(7)
    await commit(engine, table, backlog)  # committed while no relay ran: a crash after commit
    relay = OutboxRelay(engine, redis, table, prefix=redis_prefix, maxlen=10_000, poll_s=30)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(5):
            await wait_for_published(redis, redis_prefix, 7)
            later = make_envelopes(2)
            await commit(engine, table, later)
            relay.notify()  # poll_s is 30 s: only the notify can explain a quick publication
            await wait_for_published(redis, redis_prefix, 9)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await published_ids(redis, redis_prefix) == [e.id for e in backlog + later]


async def test_redis_failure_keeps_rows_for_the_next_attempt(
    engine: AsyncEngine, table: Table, redis: Redis, redis_prefix: str
) -> None:
    await commit(engine, table, make_envelopes(3))
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        with pytest.raises(Exception, match=r"[Cc]onnect"):
            await OutboxRelay(engine, dead, table, prefix=redis_prefix, maxlen=10_000).publish_pending()
    finally:
        await dead.aclose()
    assert await outbox_backlog(engine, table) == 3
    assert await OutboxRelay(engine, redis, table, prefix=redis_prefix, maxlen=10_000).publish_pending() == 3


async def test_mark_for_replay_republishes_published_rows(
    engine: AsyncEngine, table: Table, redis: Redis, redis_prefix: str
) -> None:
    envelopes = make_envelopes(4)
    await commit(engine, table, envelopes)
    relay = OutboxRelay(engine, redis, table, prefix=redis_prefix, maxlen=10_000)
    assert await relay.publish_pending() == 4
    assert await mark_for_replay(engine, table, stream="other:stream") == 0
    assert await mark_for_replay(engine, table, since=datetime(2100, 1, 1, tzinfo=UTC)) == 0
    assert await mark_for_replay(engine, table, since=T0, stream=STREAM) == 4
    assert await relay.publish_pending() == 4
    assert await published_ids(redis, redis_prefix) == [e.id for e in envelopes] * 2


async def test_outbox_table_shape(engine: AsyncEngine, table: Table) -> None:
    def inspect_table(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        insp = inspect(conn)
        return (
            cast(list[dict[str, Any]], insp.get_indexes(table.name)),
            cast(list[dict[str, Any]], insp.get_unique_constraints(table.name)),
            cast(dict[str, Any], insp.get_pk_constraint(table.name)),
        )

    async with engine.connect() as conn:
        indexes, uniques, pk = await conn.run_sync(inspect_table)
    [index] = [i for i in indexes if i["name"] == f"ix_{table.name}_unpublished"]
    assert "published_at IS NULL" in index["dialect_options"]["postgresql_where"]
    assert [u["name"] for u in uniques] == [f"uq_{table.name}_envelope_id"]
    assert pk["name"] == f"pk_{table.name}"
