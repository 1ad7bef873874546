"""All SQL on ``ingest_events`` (and the outbox rows that announce them). Flush only: the caller's
edge (the request, the poller's cycle) commits.

The hot path (:func:`insert_events`) runs on the session's asyncpg connection: the batch is
COPYed into a per-connection temporary table, then one statement inserts the rows whose id is
new (``ON CONFLICT DO NOTHING``) and, for exactly those, their envelopes into ``ingest_outbox``.
COPY moves rows several times faster than a multi-row INSERT, and doing the conflict check and
the outbox insert server-side keeps it at three round trips per batch whatever its size.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVarTuple

from qcdr_common.api.pagination import PageRequest, keyset
from qcdr_common.db import driver_connection
from sqlalchemy import Select, Text, cast, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_ingest.events.models import EventRow
from qcdr_ingest.events.service import EventRecord
from qcdr_ingest.intel.reputation_queue import NON_GLOBAL
from qcdr_ingest.streams import EVENT_OBSERVED, EVENTS

Ts = TypeVarTuple("Ts")

STAGE = "ingest_events_stage"
STAGE_COLUMNS = EventRecord._fields
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_events_stage (
    id text, source text, category text, severity text, event_time timestamptz, cluster text,
    namespace text, pod text, payload text, received_at timestamptz, envelope_id text,
    envelope_cluster text
) ON COMMIT DELETE ROWS
"""
# Literal SQL (no interpolation); $1 stream, $2 envelope type, $3 producing service. The envelope
# JSON is assembled here rather than shipped from Python: the COPY then carries each payload once,
# which halved its cost (measured). It has the shape Envelope.to_json() gives; tests parse it.
_STORED = """
WITH stored AS (
    INSERT INTO ingest_events
        (id, source, category, severity, event_time, cluster, namespace, pod, payload, received_at)
    SELECT id, source, category, severity, event_time, cluster, namespace, pod, payload::jsonb,
           received_at
    FROM ingest_events_stage
    ON CONFLICT (id) DO NOTHING
    RETURNING id, payload->'network'->>'ip' AS ip
), announced AS (
    INSERT INTO ingest_outbox (envelope_id, stream, type, data)
    SELECT s.envelope_id, $1, $2, convert_to(concat(
        '{"id":"', s.envelope_id, '","type":', to_json($2::text), ',"version":1,"source":',
        to_json($3::text), ',"cluster_id":', to_json(s.envelope_cluster), ',"occurred_at":',
        to_json(s.event_time), ',"emitted_at":', to_json(now()), ',"correlation_id":"',
        s.envelope_id, '","causation_id":null,"payload":', s.payload, '}'), 'UTF8')
    FROM ingest_events_stage s JOIN stored USING (id)
    ORDER BY s.event_time, s.id
    RETURNING 1
)"""
_INSERT = _STORED + "\nSELECT count(*) FROM announced\n"
# With AbuseIPDB on: the new events' public destinations without a fresh answer join the
# reputation queue ($4 the non-global ranges, $5 the freshness in seconds); one row per address.
_INSERT_QUEUEING = (  # literal SQL only
    _STORED  # noqa: S608
    + """, queued AS (
    INSERT INTO intel_reputation_queue (ip)
    SELECT DISTINCT s.ip::inet FROM stored s
    WHERE s.ip IS NOT NULL
      AND NOT s.ip::inet <<= ANY ($4::inet[])
      AND NOT EXISTS (
          SELECT 1 FROM intel_reputation r
          WHERE r.ip = s.ip::inet AND r.checked_at > now() - make_interval(secs => $5))
    ON CONFLICT (ip) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM announced
"""
)


async def insert_events(
    session: AsyncSession,
    rows: Sequence[EventRecord],
    *,
    service: str = "ingest",
    reputation_fresh_s: float | None = None,
) -> int:
    """Store the events whose id is new and queue their envelopes; returns how many were new.
    ``rows`` must be unique by id (the service deduplicates a batch before). With
    ``reputation_fresh_s`` (AbuseIPDB configured), their public destinations without an answer
    younger than that are queued for a reputation check."""
    if not rows:
        return 0
    # through the session: its first statement is what begins the transaction (see driver_connection)
    await session.execute(text(_STAGE_DDL))
    conn = await driver_connection(session)
    # rows of an earlier batch in this transaction (the poller stores several) must not count twice
    await conn.execute("DELETE FROM ingest_events_stage")
    await conn.copy_records_to_table(STAGE, records=rows, columns=STAGE_COLUMNS)
    if reputation_fresh_s is None:
        inserted = await conn.fetchval(_INSERT, EVENTS, EVENT_OBSERVED, service)
    else:
        inserted = await conn.fetchval(
            _INSERT_QUEUEING, EVENTS, EVENT_OBSERVED, service, NON_GLOBAL, reputation_fresh_s
        )
    return int(inserted)


# ---------------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class EventFilter:
    since: datetime | None = None  # event_time >= since
    until: datetime | None = None  # event_time < until
    severities: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    received_since: datetime | None = None  # received_at >= this (replay: what the stream missed)

    def apply(self, query: Select[*Ts]) -> Select[*Ts]:
        if self.since is not None:
            query = query.where(EventRow.event_time >= self.since)
        if self.until is not None:
            query = query.where(EventRow.event_time < self.until)
        if self.received_since is not None:
            query = query.where(EventRow.received_at >= self.received_since)
        for column, values in (
            (EventRow.severity, self.severities),
            (EventRow.category, self.categories),
            (EventRow.namespace, self.namespaces),
            (EventRow.cluster, self.clusters),
            (EventRow.source, self.sources),
        ):
            if values:
                query = query.where(column.in_(values))
        return query


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_time: datetime
    id: str
    payload: str  # the SecurityEvent JSON
    received_at: datetime


async def list_events(session: AsyncSession, filters: EventFilter, page: PageRequest) -> list[StoredEvent]:
    """One page newest first (event time, then id), fetched with ``LIMIT limit + 1`` for
    :func:`~qcdr_common.api.pagination.split_page`."""
    query = select(EventRow.event_time, EventRow.id, cast(EventRow.payload, Text), EventRow.received_at)
    # keyset() is typed for one-entity selects; this one has four columns
    query = keyset(
        typing.cast("Select[Any]", filters.apply(query)),
        page,
        EventRow.event_time.expression,
        EventRow.id.expression,
    )
    return [StoredEvent(*row) for row in (await session.execute(query)).all()]


async def get_event(session: AsyncSession, event_id: str) -> StoredEvent | None:
    query = select(EventRow.event_time, EventRow.id, cast(EventRow.payload, Text), EventRow.received_at)
    row = (await session.execute(query.where(EventRow.id == event_id))).first()
    return StoredEvent(*row) if row is not None else None


@dataclass(frozen=True, slots=True)
class ReplayRow:
    id: str
    payload: str
    event_time: datetime
    received_at: datetime
    cluster: str | None


async def iter_events(
    session: AsyncSession, filters: EventFilter, *, chunk: int = 5000
) -> AsyncIterator[list[ReplayRow]]:
    """Every matching event, oldest first, in chunks (keyset pagination: no long transaction)."""
    after: tuple[datetime, str] | None = None
    while True:
        query = select(
            EventRow.id,
            cast(EventRow.payload, Text),
            EventRow.event_time,
            EventRow.received_at,
            EventRow.cluster,
        )
        query = filters.apply(query)
        if after is not None:
            query = query.where(tuple_(EventRow.event_time, EventRow.id) > tuple_(*after))
        query = query.order_by(EventRow.event_time, EventRow.id).limit(chunk)
        rows = [ReplayRow(*row) for row in (await session.execute(query)).all()]
        if not rows:
            return
        yield rows
        if len(rows) < chunk:
            return
        after = (rows[-1].event_time, rows[-1].id)
