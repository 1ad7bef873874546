"""Taking a forwarded batch: validate each item, force the spoke's cluster onto it, keep each
(cluster, kind, item id) once, and, in the same transaction, put new events into the outbox for
the hub's ``ingest:events`` and new findings into ``federation_findings``.

Events go out exactly as ingest announces its own (type ``ingest.event_observed``, payload the
SecurityEvent), with ``source`` ``federation`` and ``cluster_id`` the spoke's name, so the hub's
analysis correlates them like local ones, across clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.federation.v1 import ForwardAck, ForwardBatch, ForwardKind, Rejected
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import new_envelope
from qcdr_common.streams.outbox import enqueue
from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.db.base import OUTBOX
from qcdr_federation.hub.forwarding.models import ForwardedFindingRow, ReceivedRow
from qcdr_federation.hub.spoke_auth import SpokeCaller
from qcdr_federation.streams import EVENT_OBSERVED, EVENTS

SOURCE = "federation"
MAX_REASON = 300
# orjson, which writes the JSON(B) columns and the outbox, encodes integers in this range only
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


@dataclass
class Checked:
    """A batch after validation: the valid items (index, model) and the per-item rejections."""

    items: list[tuple[int, SecurityEvent | Finding]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def _reason(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "item"
    more = exc.error_count() - 1
    text = f"{where}: {first['msg']}" + (f" (and {more} more)" if more else "")
    return text[:MAX_REASON]


def _unstorable(value: Any, where: tuple[str | int, ...] = ()) -> str | None:
    """Why a valid item still cannot be stored (PostgreSQL text and JSONB refuse NUL, UTF-8 has no
    lone surrogates, orjson no integers past 64 bits), or None: the item's own rejection, rather
    than a failed batch."""
    problem: str | None = None
    if isinstance(value, str):
        if "\x00" in value:
            problem = "contains a NUL character"
        elif not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                problem = "is not valid UTF-8 (an unpaired surrogate)"
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            problem = "integer is outside the 64-bit range"
    elif isinstance(value, dict):
        for key, inner in value.items():
            found = _unstorable(key, (*where, "<key>")) or _unstorable(inner, (*where, key))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            found = _unstorable(inner, (*where, i))
            if found:
                return found
    if problem is None:
        return None
    return f"{'.'.join(str(p) for p in where) or 'item'}: {problem}"[:MAX_REASON]


def _with_cluster(item: SecurityEvent | Finding, cluster: str) -> SecurityEvent | Finding:
    # the authenticated spoke is the item's cluster, whatever the payload said
    return item.model_copy(update={"workload": item.workload.model_copy(update={"cluster": cluster})})


def check(batch: ForwardBatch, cluster_name: str) -> Checked:
    model: type[SecurityEvent] | type[Finding] = (
        SecurityEvent if batch.kind is ForwardKind.EVENTS else Finding
    )
    checked = Checked()
    for index, raw in enumerate(batch.items):
        try:
            item: BaseModel = model.model_validate(raw)
        except ValidationError as exc:
            checked.rejected.append(Rejected(index=index, reason=_reason(exc)))
            continue
        assert isinstance(item, SecurityEvent | Finding)
        unstorable = _unstorable(item.model_dump(mode="json"))
        if unstorable is not None:
            checked.rejected.append(Rejected(index=index, reason=unstorable))
            continue
        checked.items.append((index, _with_cluster(item, cluster_name)))
    return checked


async def take(session: AsyncSession, caller: SpokeCaller, batch: ForwardBatch, now: datetime) -> ForwardAck:
    """Store what is new in the batch (the caller commits); duplicates are counted, not stored."""
    checked = check(batch, caller.cluster_name)
    unique: dict[str, SecurityEvent | Finding] = {}
    for _, item in checked.items:
        unique.setdefault(item.id, item)  # a repeat inside the batch is a duplicate too
    new_ids: set[str] = set()
    if unique:
        rows = [
            {
                "cluster_id": caller.cluster_id,
                "kind": batch.kind.value,
                "item_id": item_id,
                "received_at": now,
            }
            for item_id in unique
        ]
        stmt = insert(ReceivedRow).values(rows).on_conflict_do_nothing().returning(ReceivedRow.item_id)
        new_ids = set((await session.scalars(stmt)).all())
    fresh = [unique[i] for i in unique if i in new_ids]
    if batch.kind is ForwardKind.EVENTS:
        envelopes = [
            new_envelope(
                EVENT_OBSERVED,
                item,
                source=SOURCE,
                cluster_id=caller.cluster_name,
                occurred_at=item.event_time,
            )
            for item in fresh
        ]
        await enqueue(session, OUTBOX, EVENTS, envelopes)
    elif fresh:
        await session.execute(
            insert(ForwardedFindingRow)
            .values([_finding_row(caller.cluster_id, item, now) for item in fresh])
            .on_conflict_do_nothing()
        )
    return ForwardAck(
        accepted=len(fresh),
        duplicates=len(checked.items) - len(fresh),
        rejected=tuple(checked.rejected),
    )


def _finding_row(cluster_id: str, item: SecurityEvent | Finding, now: datetime) -> dict[str, Any]:
    assert isinstance(item, Finding)
    return {
        "cluster_id": cluster_id,
        "id": item.id,
        "kind": item.kind.value,
        "category": item.category,
        "severity": item.severity.value,
        "event_time": item.event_time,
        "payload": item.model_dump(mode="json"),
        "received_at": now,
    }


async def prune_received(session: AsyncSession, *, before: datetime, batch: int = 10_000) -> int:
    """Forget dedupe rows received before ``before`` (one batch; the caller commits)."""
    oldest = (
        select(ReceivedRow.cluster_id, ReceivedRow.kind, ReceivedRow.item_id)
        .where(ReceivedRow.received_at < before)
        .limit(batch)
    )
    result = await session.execute(
        delete(ReceivedRow).where(
            tuple_(ReceivedRow.cluster_id, ReceivedRow.kind, ReceivedRow.item_id).in_(oldest)
        )
    )
    return int(getattr(result, "rowcount", 0))
