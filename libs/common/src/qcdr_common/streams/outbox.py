"""Transactional outbox: envelopes are written in the same transaction as the state change, and a
relay publishes them to Redis afterwards, so a crash between commit and XADD loses nothing.

Each service owns one ``<service>_outbox`` table (built here on the service's own metadata and
created by the service's own Alembic migration). The relay may run in several pods at once: rows
are claimed ``FOR UPDATE SKIP LOCKED``, and the claim is held while publishing, so a row goes out
once per successful commit. A crash after XADD but before the commit republishes it: at least
once, which is why consumers deduplicate on the envelope id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from qcdr_common.logging import get_logger
from qcdr_common.settings import CommonSettings
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.metrics import OUTBOX_PUBLISHED
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish_fields
from qcdr_common.streams.runner import wait_any

log = get_logger(__name__)


def outbox_table(metadata: MetaData, service: str) -> Table:
    """The ``<service>_outbox`` table on ``metadata``; constraint names are explicit so the
    Alembic migration matches whatever naming convention the metadata carries."""
    name = f"{service}_outbox"
    table = Table(
        name,
        metadata,
        Column("id", BigInteger, autoincrement=True, nullable=False),  # BIGSERIAL: relay order
        Column("envelope_id", Text, nullable=False),
        Column("stream", Text, nullable=False, comment="Stream name without the key prefix."),
        Column("type", Text, nullable=False),
        Column("data", LargeBinary, nullable=False, comment="The envelope JSON, as published."),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        PrimaryKeyConstraint("id", name=f"pk_{name}"),
        UniqueConstraint("envelope_id", name=f"uq_{name}_envelope_id"),
    )
    # only unpublished rows are ever scanned, so the index stays as small as the backlog
    Index(f"ix_{name}_unpublished", table.c.id, postgresql_where=table.c.published_at.is_(None))
    return table


async def enqueue(session: AsyncSession, table: Table, stream: str, envelopes: Sequence[Envelope]) -> None:
    """Insert envelopes in the caller's transaction (the caller commits them with its state change).

    ``stream`` is the name without prefix (``"analysis:findings"``). An envelope id already in the
    outbox is skipped, so re-running a handler does not publish twice.
    """
    if not envelopes:
        return
    rows = [{"envelope_id": e.id, "stream": stream, "type": e.type, "data": e.to_json()} for e in envelopes]
    # One compiled statement executed over the rows (asyncpg executemany): a multi-row VALUES
    # built per call is recompiled every time and was the handlers' largest fixed cost.
    stmt = insert(table).on_conflict_do_nothing(index_elements=["envelope_id"])
    await session.execute(stmt, rows)


class OutboxRelay:
    """Publishes unpublished outbox rows to their streams: at start-up, on ``notify()``, and every
    ``poll_s`` (rows committed by another process are found by polling)."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        table: Table,
        *,
        prefix: str,
        maxlen: int,
        batch: int = 500,
        poll_s: float = 0.05,
        error_backoff_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.table = table
        self.prefix = prefix
        self.maxlen = maxlen
        self.batch = batch
        self.poll_s = poll_s
        self.error_backoff_s = error_backoff_s
        self._wake = asyncio.Event()
        # Claim and mark in one statement with one stable text: a SELECT, then an UPDATE with an
        # IN list of the batch's ids (a new prepared statement for each batch size) cost more
        # than publishing. The table name is the service's own, not input.
        name = table.name
        self._claim = text(
            f"WITH batch AS (SELECT id FROM {name} WHERE published_at IS NULL ORDER BY id"  # noqa: S608
            f" LIMIT :limit FOR UPDATE SKIP LOCKED) UPDATE {name} AS o SET published_at = now()"
            " FROM batch WHERE o.id = batch.id RETURNING o.id, o.stream, o.type, o.data"
        )

    @classmethod
    def from_settings(
        cls, engine: AsyncEngine, redis: Redis, table: Table, settings: CommonSettings
    ) -> OutboxRelay:
        return cls(
            engine,
            redis,
            table,
            prefix=settings.redis_prefix,
            maxlen=settings.stream_maxlen,
            batch=settings.stream_batch,
            poll_s=settings.outbox_poll_s,
        )

    def notify(self) -> None:
        """Wake the relay now (call it after committing rows in this process)."""
        self._wake.set()

    async def publish_batch(self) -> int:
        """Claim, publish and mark one batch in one transaction; returns the number published."""
        async with self.engine.begin() as conn:
            # One statement claims and marks the batch (the CTE's SKIP LOCKED keeps a second
            # relay off these rows) and hands back what to publish; the marks only count if the
            # XADD below succeeds, since a Redis failure rolls the transaction back.
            rows = sorted((await conn.execute(self._claim, {"limit": self.batch})).all())
            if not rows:
                return 0
            # RETURNING has no order: sorted, so each stream gets its entries in id order
            entries = [
                (stream_key(self.prefix, stream), {b"type": kind.encode(), b"data": data})
                for _, stream, kind, data in rows
            ]
            await publish_fields(self.redis, entries, self.maxlen)
        OUTBOX_PUBLISHED.labels(table=self.table.name).inc(len(rows))
        return len(rows)

    async def publish_pending(self) -> int:
        """Publish every row unpublished (and not claimed by another relay) right now."""
        total = 0
        while True:
            n = await self.publish_batch()
            total += n
            if n < self.batch:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """Publish the backlog left by a previous run, then keep publishing until ``stop`` is set."""
        log.info("outbox relay started", table=self.table.name)
        while not stop.is_set():
            self._wake.clear()
            try:
                published = await self.publish_pending()
            except Exception as exc:  # Redis or Postgres away: keep the rows, retry after a pause
                log.warning("outbox relay failed", table=self.table.name, error=repr(exc))
                await wait_any(stop, seconds=self.error_backoff_s)
                continue
            if published == 0:
                await wait_any(stop, self._wake, seconds=self.poll_s)
        log.info("outbox relay stopped", table=self.table.name)


async def outbox_backlog(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.published_at.is_(None))
        )
    return int(value or 0)


async def mark_for_replay(
    engine: AsyncEngine, table: Table, *, since: datetime | None = None, stream: str | None = None
) -> int:
    """Mark published rows unpublished again so the relay re-publishes them (consumers dedupe on
    the envelope id). Returns the number of rows marked."""
    t = table
    stmt = update(t).where(t.c.published_at.is_not(None))
    if since is not None:
        stmt = stmt.where(t.c.created_at >= since)
    if stream is not None:
        stmt = stmt.where(t.c.stream == stream)
    async with engine.begin() as conn:
        result = await conn.execute(stmt.values(published_at=None))
    return int(result.rowcount or 0)


async def purge_published(engine: AsyncEngine, table: Table, *, older_than: timedelta) -> int:
    """Delete rows published longer ago than ``older_than`` (the outbox is not an archive)."""
    t = table
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(t).where(t.c.published_at.is_not(None), t.c.published_at < func.now() - older_than)
        )
    return int(result.rowcount or 0)
