"""All SQL over the tables analysis owns. Functions flush through the caller's session; the caller
(the handler, the request) owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams import Envelope
from sqlalchemy import Select, Table, exists, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
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


async def insert_findings(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert findings (sorted by id, for the same lock order); returns the ids actually inserted."""
    if not rows:
        return set()
    stmt = insert(_FINDINGS).on_conflict_do_nothing(index_elements=["id"]).returning(_FINDINGS.c.id)
    ordered = sorted(rows, key=lambda row: str(row["id"]))
    # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues")
    result = await session.execute(stmt, ordered)
    return set(result.scalars().all())


def row_values(finding: Finding, payload: dict[str, Any], *, envelope_id: str) -> dict[str, Any]:
    """The column values of a finding; ``payload`` is its JSON (``model_dump(mode="json")``)."""
    return {
        "id": finding.id,
        "kind": finding.kind.value,
        "detector": finding.detector,
        "category": finding.category,
        "severity": finding.severity.value,
        "severity_rank": finding.severity.rank,
        "techniques": list(finding.techniques),
        "event_time": finding.event_time,
        "namespace": finding.workload.namespace,
        "cluster": finding.workload.cluster,
        "source": finding.source,
        "evidence_event_ids": list(finding.evidence_event_ids),
        "envelope_id": envelope_id,
        "payload": payload,
    }


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
