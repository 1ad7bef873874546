"""Retention against the real PostgreSQL: old rows go in batches, new ones and unpublished outbox
rows stay, one replica deletes at a time, and 0 keeps everything."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from qcdr_common.retention import AgeRule, OutboxRule, RetentionLoop, lock_key, prune
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = [pytest.mark.db]

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DAY = 86_400.0


@pytest.fixture
async def events(engine: AsyncEngine) -> AsyncIterator[str]:
    """A time-ordered table with an index on its time, as ingest_events has."""
    name = f"t{uuid.uuid4().hex[:10]}_events"
    async with engine.begin() as conn:
        await conn.execute(
            text(f"CREATE TABLE {name} (id text PRIMARY KEY, event_time timestamptz NOT NULL)")
        )
        await conn.execute(text(f"CREATE INDEX ix_{name}_t ON {name} (event_time)"))
    yield name
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {name}"))


async def add_events(engine: AsyncEngine, table: str, ages_days: list[float]) -> None:
    async with engine.begin() as conn:
        for i, age in enumerate(ages_days):
            await conn.execute(
                text(f"INSERT INTO {table} (id, event_time) VALUES (:id, :t)"),
                {"id": f"e{i}", "t": NOW - timedelta(days=age)},
            )


async def ids(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))
        return [str(r[0]) for r in rows]


async def add_outbox(engine: AsyncEngine, table: Table, published_ago_days: list[float | None]) -> None:
    async with engine.begin() as conn:
        for i, age in enumerate(published_ago_days):
            await conn.execute(
                table.insert().values(
                    envelope_id=f"env{i}",
                    stream="svc:things",
                    type="svc.thing",
                    data=b"{}",
                    published_at=None if age is None else NOW - timedelta(days=age),
                )
            )


async def test_old_rows_go_in_batches_new_ones_stay(engine: AsyncEngine, events: str) -> None:
    await add_events(engine, events, [40, 35, 31, 29, 1, 0])
    rule = AgeRule(events, "event_time", 30 * DAY)
    deleted = await prune(engine, [rule], service=f"test-{events}", now=NOW, batch=2)
    assert deleted == {events: 3}  # two full batches and one that came up short
    assert await ids(engine, events) == ["e3", "e4", "e5"]
    assert await prune(engine, [rule], service=f"test-{events}", now=NOW) == {}


async def test_zero_keeps_everything(engine: AsyncEngine, events: str, table: Table) -> None:
    await add_events(engine, events, [400, 40])
    await add_outbox(engine, table, [30, 20])
    rules = [AgeRule(events, "event_time", 0), OutboxRule(table, 0)]
    assert await prune(engine, rules, service=f"test-{events}", now=NOW) == {}
    assert await ids(engine, events) == ["e0", "e1"]


@pytest.mark.parametrize("keep_s", [float("inf"), 1e12])
async def test_a_retention_past_the_calendar_keeps_that_table_and_prunes_the_others(
    engine: AsyncEngine, events: str, table: Table, keep_s: float
) -> None:
    """The settings take 'inf' or 1e12 s; the cutoff overflowed, and as every rule runs in one pass,
    no table was pruned again."""
    await add_events(engine, events, [40, 1])
    await add_outbox(engine, table, [30, 20])
    rules = [OutboxRule(table, keep_s), AgeRule(events, "event_time", 30 * DAY)]
    assert await prune(engine, rules, service=f"test-{events}", now=NOW) == {events: 1}
    assert await ids(engine, events) == ["e1"]


async def test_the_outbox_loses_published_rows_up_to_its_backlog(engine: AsyncEngine, table: Table) -> None:
    # ids in write order: old published rows, one row the relay has not published yet, then more
    # old published rows behind it and a recent one
    await add_outbox(engine, table, [3, 3, 2, None, 2, 0.1])
    rule = OutboxRule(table, DAY)
    deleted = await prune(engine, [rule], service=f"test-{table.name}", now=NOW, batch=2)
    assert deleted == {str(table.name): 3}
    left = await ids(engine, str(table.name))
    async with engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT envelope_id FROM {table.name} ORDER BY id"))).all()
    assert [r[0] for r in rows] == ["env3", "env4", "env5"]  # nothing at or after the backlog
    assert len(left) == 3
    # once the relay published it, the next pass goes on to what is old behind it
    async with engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE {table.name} SET published_at = :t WHERE envelope_id = 'env3'"),
            {"t": NOW - timedelta(days=2)},
        )
    assert await prune(engine, [rule], service=f"test-{table.name}", now=NOW, batch=2) == {str(table.name): 2}
    async with engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT envelope_id FROM {table.name}"))).all()
    assert [r[0] for r in rows] == ["env5"]


async def test_one_replica_deletes_at_a_time(engine: AsyncEngine, events: str) -> None:
    await add_events(engine, events, [40])
    service = f"test-{events}"
    rule = AgeRule(events, "event_time", 30 * DAY)
    async with engine.connect() as other:  # another replica's pass holds the lock
        await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(service)})
        assert await prune(engine, [rule], service=service, now=NOW) is None
        assert await ids(engine, events) == ["e0"]
        await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(service)})
        await other.commit()
    assert await prune(engine, [rule], service=service, now=NOW) == {events: 1}


async def test_the_loop_deletes_and_survives_a_failing_pass(engine: AsyncEngine, events: str) -> None:
    await add_events(engine, events, [40, 1])
    broken = AgeRule(f"{events}_missing", "event_time", DAY)  # the table is not there: the pass fails
    loop = RetentionLoop(
        engine, [broken, AgeRule(events, "event_time", 30 * DAY)], service=f"test-{events}", interval_s=0.05
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.3)
    assert not task.done()  # a failing pass never ends the loop
    loop.rules = loop.rules[1:]
    for _ in range(200):
        if await ids(engine, events) == ["e1"]:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await ids(engine, events) == ["e1"]


async def test_a_pass_after_a_big_deletion_reads_the_index(engine: AsyncEngine, events: str) -> None:
    """Statistics taken while half the table was old must not make the next pass read all of it."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"INSERT INTO {events} (id, event_time) SELECT 'e' || i,"
                " CAST(:now AS timestamptz) - make_interval(days => CASE WHEN i % 2 = 0 THEN 40 ELSE 1 END)"
                " FROM generate_series(1, 20000) AS i"
            ),
            {"now": NOW},
        )
        await conn.execute(text(f"ANALYZE {events}"))
    rule = AgeRule(events, "event_time", 30 * DAY)
    assert await prune(engine, [rule], service=f"test-{events}", now=NOW) == {events: 10_000}
    async with engine.connect() as conn:
        plan = "\n".join(
            str(row[0])
            for row in await conn.execute(
                text(f"EXPLAIN {rule.oldest_sql()}"), {"cutoff": NOW - timedelta(days=30), "batch": 5000}
            )
        )
    assert "Index" in plan, plan
    assert "Seq Scan" not in plan, plan
