"""All SQL over the tables analysis owns. Functions flush through the caller's session; the caller
(the handler, the request) owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import driver_connection
from qcdr_common.streams import Envelope
from sqlalchemy import Select, Table, exists, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis.findings.models import OUTBOX, FindingRow

_FINDINGS = cast(Table, FindingRow.__table__)
# the columns the API sorts on (keyset pagination takes Core columns)
EVENT_TIME = _FINDINGS.c.event_time
ID = _FINDINGS.c.id


# One statement with two array parameters, whatever the batch size: compiled and prepared once,
# where a multi-row VALUES list would be compiled anew for every batch.
_RECORD_RECEIVED = text(
    "INSERT INTO analysis_received (envelope_id, type)"
    " SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:types AS text[]))"
    " ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id"
)


async def record_received(session: AsyncSession, envelopes: Sequence[Envelope]) -> set[str]:
    """Insert the envelope ids; returns those not seen before (a redelivery returns nothing).

    Sorted, so two transactions inserting overlapping sets take the row locks in the same order
    and wait for each other instead of deadlocking.
    """
    rows = {e.id: e.type for e in envelopes}
    if not rows:
        return set()
    ids = sorted(rows)
    result = await session.execute(_RECORD_RECEIVED, {"ids": ids, "types": [rows[i] for i in ids]})
    return set(result.scalars().all())


STAGE = "analysis_findings_stage"
_STAGE_DDL = text(
    "CREATE TEMP TABLE IF NOT EXISTS analysis_findings_stage ("
    " position integer, id text, kind text, detector text, category text, severity text,"
    " severity_rank smallint, techniques text[], event_time timestamptz, namespace text, cluster text,"
    " source text, evidence_event_ids text[], envelope_id text, payload text, data bytea"
    ") ON COMMIT DELETE ROWS"
)
# Literal SQL; $1 the stream, $2 the envelope type. The findings go in by id (the same lock order
# for two transactions with overlapping batches); their envelopes in the order they were raised.
_INSERT = """
WITH stored AS (
    INSERT INTO analysis_findings
        (id, kind, detector, category, severity, severity_rank, techniques, event_time, namespace,
         cluster, source, evidence_event_ids, envelope_id, payload)
    SELECT id, kind, detector, category, severity, severity_rank, techniques, event_time, namespace,
           cluster, source, evidence_event_ids, envelope_id, payload::jsonb
    FROM analysis_findings_stage
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), announced AS (
    INSERT INTO analysis_outbox (envelope_id, stream, type, data)
    SELECT s.envelope_id, $1, $2, s.data
    FROM analysis_findings_stage s JOIN stored USING (id)
    WHERE s.data IS NOT NULL
    ORDER BY s.position
    ON CONFLICT (envelope_id) DO NOTHING
    RETURNING 1
)
SELECT id FROM stored
"""


class FindingRecord(NamedTuple):
    """A finding as one row of the staging table (its columns, in order)."""

    position: int
    id: str
    kind: str
    detector: str
    category: str
    severity: str
    severity_rank: int
    techniques: list[str]
    event_time: datetime
    namespace: str | None
    cluster: str | None
    source: str
    evidence_event_ids: list[str]
    envelope_id: str
    payload: str  # the Finding JSON
    data: bytes | None  # the envelope JSON to publish, or None to store without announcing


def finding_record(
    finding: Finding, payload: str, *, envelope_id: str, data: bytes | None, position: int = 0
) -> FindingRecord:
    """``payload``: the finding's JSON text; ``data``: its envelope's JSON (None: no outbox row)."""
    return FindingRecord(
        position,
        finding.id,
        finding.kind.value,
        finding.detector,
        finding.category,
        finding.severity.value,
        finding.severity.rank,
        list(finding.techniques),
        finding.event_time,
        finding.workload.namespace,
        finding.workload.cluster,
        finding.source,
        list(finding.evidence_event_ids),
        envelope_id,
        payload,
        data,
    )


async def insert_findings(
    session: AsyncSession, records: Sequence[FindingRecord], *, stream: str, envelope_type: str
) -> set[str]:
    """Store the findings whose id is new and, for those with ``data``, their envelopes in the
    outbox; returns the ids actually inserted.

    COPY into a per-connection temporary table, then one statement inserts both: three round trips
    whatever the batch size, where a multi-row INSERT of findings plus one of outbox rows spent
    most of its time building parameters in SQLAlchemy (measured: bench/e2e.py).
    """
    if not records:
        return set()
    # through the session: its first statement is what begins the transaction (driver_connection)
    await session.execute(_STAGE_DDL)
    conn = await driver_connection(session)
    # rows of an earlier call in this transaction must not be inserted twice
    await conn.execute("DELETE FROM analysis_findings_stage")
    await conn.copy_records_to_table(STAGE, records=records, columns=FindingRecord._fields)
    return {row[0] for row in await conn.fetch(_INSERT, stream, envelope_type)}


# ----------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class FindingFilters:
    since: datetime | None = None  # event_time >= since
    until: datetime | None = None  # event_time < until
    severity: tuple[Severity, ...] = ()
    min_severity: Severity | None = None
    category: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    namespace: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()
    detector: tuple[str, ...] = ()
    technique: str | None = None


def select_findings(filters: FindingFilters) -> Select[Any]:
    stmt = select(FindingRow)
    if filters.since is not None:
        stmt = stmt.where(FindingRow.event_time >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(FindingRow.event_time < filters.until)
    if filters.severity:
        stmt = stmt.where(FindingRow.severity.in_([s.value for s in filters.severity]))
    if filters.min_severity is not None:
        stmt = stmt.where(FindingRow.severity_rank >= filters.min_severity.rank)
    for column, values in (
        (FindingRow.category, filters.category),
        (FindingRow.kind, filters.kind),
        (FindingRow.namespace, filters.namespace),
        (FindingRow.cluster, filters.cluster),
        (FindingRow.detector, filters.detector),
    ):
        if values:
            stmt = stmt.where(column.in_(values))
    if filters.technique is not None:
        stmt = stmt.where(FindingRow.techniques.contains([filters.technique]))
    return stmt


async def get_finding(session: AsyncSession, finding_id: str) -> FindingRow | None:
    return await session.get(FindingRow, finding_id)


# ----------------------------------------------------------------------------- replay


async def mark_findings_for_replay(session: AsyncSession, since: datetime | None) -> int:
    """Mark the published outbox rows of findings created at or after ``since`` unpublished."""
    stmt = (
        update(OUTBOX)
        .where(OUTBOX.c.published_at.is_not(None))
        .where(OUTBOX.c.envelope_id == FindingRow.envelope_id)
        .values(published_at=None)
    )
    if since is not None:
        stmt = stmt.where(FindingRow.created_at >= since)
    result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


async def findings_without_outbox_row(
    session: AsyncSession, since: datetime | None, *, after: tuple[datetime, str] | None, limit: int
) -> list[FindingRow]:
    """Findings whose outbox row is gone (purged), in (created_at, id) order, a page at a time."""
    stmt = select(FindingRow).where(~exists().where(OUTBOX.c.envelope_id == FindingRow.envelope_id))
    if since is not None:
        stmt = stmt.where(FindingRow.created_at >= since)
    if after is not None:
        position = tuple_(literal(after[0], FindingRow.created_at.type), literal(after[1]))
        stmt = stmt.where(tuple_(FindingRow.created_at, FindingRow.id) > position)
    stmt = stmt.order_by(FindingRow.created_at, FindingRow.id).limit(limit)
    return list((await session.scalars(stmt)).all())


# ----------------------------------------------------------------------------- stats

# One scan for every aggregate of the stats endpoint: GROUPING SETS count per severity, category,
# namespace, image and (bucket, severity) together, and a window ranks each set so only the top
# entries leave the database. GROUPING(...) tells the sets apart (a bit per argument, 1 = not
# grouped by it): 15 severity, 23 category, 27 namespace, 29 image, 14 (bucket, severity).
_STATS = text(
    """
    WITH scoped AS (
        SELECT severity, category, namespace, payload -> 'workload' ->> 'image' AS image,
               date_trunc(CAST(:unit AS text), event_time AT TIME ZONE 'UTC') AS bucket
        FROM analysis_findings
        WHERE event_time >= :since AND event_time < :until
    ),
    grouped AS (
        SELECT GROUPING(severity, category, namespace, image, bucket) AS set_id,
               severity, category, namespace, image, bucket, count(*) AS n
        FROM scoped
        GROUP BY GROUPING SETS (
            (severity), (category), (namespace), (image), (bucket, severity), (bucket, category)
        )
    ),
    ranked AS (
        SELECT *, row_number() OVER (
            PARTITION BY set_id ORDER BY n DESC, category, namespace, image, bucket, severity
        ) AS position
        FROM grouped
        WHERE NOT (set_id = 27 AND namespace IS NULL) AND NOT (set_id = 29 AND image IS NULL)
    )
    SELECT set_id, severity, category, namespace, image, bucket, n
    FROM ranked
    WHERE position <= CASE set_id WHEN 23 THEN :top_categories WHEN 27 THEN :top_namespaces
                                  WHEN 29 THEN :top_images ELSE position END
    """
)
_SET_SEVERITY, _SET_CATEGORY, _SET_NAMESPACE, _SET_IMAGE, _SET_SERIES = 15, 23, 27, 29, 14
_SET_CATEGORY_SERIES = 22  # (bucket, category)


@dataclass
class FindingCounts:
    """What :func:`finding_counts` found; lists are largest first, ``series`` only non-empty buckets."""

    by_severity: dict[str, int]
    by_category: list[tuple[str, int]]
    by_namespace: list[tuple[str, int]]
    by_image: list[tuple[str, int]]
    series: dict[datetime, dict[str, int]]  # naive UTC bucket start -> severity -> count
    # naive UTC bucket start -> category -> count (every category; the API keeps the largest)
    category_series: dict[datetime, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())


async def finding_counts(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    unit: str,
    top_categories: int = 20,
    top_namespaces: int = 10,
    top_images: int = 10,
) -> FindingCounts:
    """Counts of the findings with an event time in ``[since, until)``; ``unit`` is a
    ``date_trunc`` field (``hour`` or ``day``), applied in UTC."""
    # The planner cannot tell how few (bucket, severity) groups there are (it assumes one per
    # distinct event time), so under the default 4 MB it sorts 100,000 rows on disk instead of
    # hashing: ~150 ms against ~90 ms with room to hash. LOCAL: this transaction only.
    await session.execute(text("SET LOCAL work_mem = '32MB'"))
    result = await session.execute(
        _STATS,
        {
            "since": since,
            "until": until,
            "unit": unit,
            "top_categories": top_categories,
            "top_namespaces": top_namespaces,
            "top_images": top_images,
        },
    )
    counts = FindingCounts({}, [], [], [], {})
    for set_id, severity, category, namespace, image, bucket, n in result.all():
        if set_id == _SET_SEVERITY:
            counts.by_severity[severity] = int(n)
        elif set_id == _SET_CATEGORY:
            counts.by_category.append((category, int(n)))
        elif set_id == _SET_NAMESPACE:
            counts.by_namespace.append((namespace, int(n)))
        elif set_id == _SET_IMAGE:
            counts.by_image.append((image, int(n)))
        elif set_id == _SET_SERIES:
            counts.series.setdefault(bucket, {})[severity] = int(n)
        elif set_id == _SET_CATEGORY_SERIES:
            counts.category_series.setdefault(bucket, {})[category] = int(n)
    # the window ordered each set already; keep that order explicit (largest first, then name)
    for pairs in (counts.by_category, counts.by_namespace, counts.by_image):
        pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return counts
