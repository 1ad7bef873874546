"""Retention: rows of tables that grow with traffic (events, findings, admission decisions, dedupe
ids, published outbox rows) are deleted once they are older than their table's retention.

Every replica runs the loop; a pass takes a PostgreSQL advisory lock (tried, never waited for) so
one replica deletes at a time. Rows go in small batches, each its own transaction, so a pass never
holds locks for long nor builds one huge transaction; the time-ordered tables are read through an
index on their time column, the outbox from its oldest rows (see :class:`OutboxRule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prometheus_client import Counter
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from qcdr_common.logging import get_logger

log = get_logger(__name__)

DELETED = Counter("qcdr_retention_deleted_total", "Rows deleted by retention, by table.", ["table"])
PASSES = Counter("qcdr_retention_passes_total", "Retention passes, by outcome.", ["outcome"])

BATCH = 5_000


class Rule(Protocol):
    @property
    def table(self) -> str: ...

    def cutoff(self, now: datetime) -> datetime | None: ...

    async def delete_batch(self, connection: AsyncConnection, cutoff: datetime, batch: int) -> int:
        """Delete up to ``batch`` rows older than ``cutoff``; when fewer went, the table is done."""
        ...


def _cutoff(now: datetime, keep_s: float) -> datetime | None:
    """Rows older than this go; None (keep_s 0) keeps them for good."""
    if not keep_s > 0:
        return None
    try:
        return now - timedelta(seconds=keep_s)
    except OverflowError:  # inf, or before year 1: longer than anything stored, so for good
        return None


@dataclass(frozen=True)
class AgeRule:
    """Rows whose ``column`` (indexed) is older than ``keep_s`` seconds; 0 keeps them for good."""

    table: str
    column: str
    keep_s: float

    def cutoff(self, now: datetime) -> datetime | None:
        return _cutoff(now, self.keep_s)

    def oldest_sql(self) -> str:
        """The rows of one batch (parameters ``cutoff``, ``batch``)."""
        return (
            f"SELECT ctid FROM {self.table} WHERE {self.column} < :cutoff"  # noqa: S608  (names from code)
            f" ORDER BY {self.column} LIMIT :batch"
        )

    async def delete_batch(self, connection: AsyncConnection, cutoff: datetime, batch: int) -> int:
        # ctid: no assumption about the primary key. ORDER BY makes the inner select walk the time
        # index from its oldest entry and stop at the cutoff; without it, statistics from before a
        # big deletion (half the table old) chose a sequential scan of the whole table, every pass.
        result = await connection.execute(
            text(f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY({self.oldest_sql()}))"),  # noqa: S608
            {"cutoff": cutoff, "batch": batch},
        )
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class OutboxRule:
    """Published outbox rows older than ``keep_s`` (what ``replay`` can send again).

    The outbox has no index on its times (its only index covers the unpublished backlog, kept as
    small as the backlog on purpose), but rows are numbered in the order they were written and
    published soon after: each batch looks at the ``batch`` oldest rows by id and deletes those
    published before the cutoff. A batch that cannot delete them all has reached rows that are
    newer or not yet published, and the pass ends there: nothing unpublished is ever deleted.
    """

    outbox: Table
    keep_s: float

    @property
    def table(self) -> str:
        return str(self.outbox.name)

    def cutoff(self, now: datetime) -> datetime | None:
        return _cutoff(now, self.keep_s)

    async def delete_batch(self, connection: AsyncConnection, cutoff: datetime, batch: int) -> int:
        name = self.table
        result = await connection.execute(
            text(
                f"WITH head AS (SELECT id, published_at FROM {name} ORDER BY id LIMIT :batch) "  # noqa: S608
                f"DELETE FROM {name} AS o USING head WHERE o.id = head.id "
                "AND head.published_at IS NOT NULL AND head.published_at < :cutoff"
            ),
            {"cutoff": cutoff, "batch": batch},
        )
        return int(getattr(result, "rowcount", 0) or 0)


def lock_key(service: str) -> int:
    """A stable advisory lock key per service (its tables are its own)."""
    return zlib.crc32(f"qcdr-retention:{service}".encode())


async def prune(
    engine: AsyncEngine,
    rules: Sequence[Rule],
    *,
    service: str,
    now: datetime | None = None,
    batch: int = BATCH,
    pause_s: float = 0.0,
) -> dict[str, int] | None:
    """One pass: rows deleted per table, or None when another replica holds the pass."""
    now = now or datetime.now(UTC)
    deleted: dict[str, int] = {}
    async with engine.connect() as connection:
        held = await connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(service)})
        await connection.commit()
        if not held:
            return None
        try:
            for rule in rules:
                cutoff = rule.cutoff(now)
                if cutoff is None:
                    continue
                total = 0
                while True:
                    async with connection.begin():
                        gone = await rule.delete_batch(connection, cutoff, batch)
                    total += gone
                    if gone < batch:
                        break
                    if pause_s:  # leave the database to the traffic between batches
                        await asyncio.sleep(pause_s)
                if total:
                    DELETED.labels(rule.table).inc(total)
                    deleted[rule.table] = total
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(service)})
            await connection.commit()
    return deleted


class RetentionLoop:
    """``run(stop)``: a pass now and every ``interval_s``; a failed pass is logged and retried."""

    def __init__(
        self, engine: AsyncEngine, rules: Sequence[Rule], *, service: str, interval_s: float
    ) -> None:
        self.engine = engine
        self.rules = list(rules)
        self.service = service
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                deleted = await prune(self.engine, self.rules, service=self.service, pause_s=0.01)
            except Exception as exc:  # the database away for a while: the next pass tries again
                PASSES.labels("failed").inc()
                log.warning(
                    "retention_failed", service=self.service, error=f"{type(exc).__name__}: {exc}"[:500]
                )
            else:
                PASSES.labels("skipped" if deleted is None else "done").inc()
                if deleted:
                    log.info("retention_deleted", service=self.service, rows=deleted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
