"""``/v1/outputs``: the configured sinks with their queues, the dead letters (and retrying them),
and ``POST /v1/findings/{id}/close``, which resolves the finding's incidents in the sinks.

Reads need the read scope, the rest the write scope. Secrets never appear: sinks are described
by type, name and a redacted destination.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import Page, PageParams, keyset, split_page
from qcdr_common.contracts.findings.v1 import Finding
from sqlalchemy import delete, func, select

from qcdr_response.deps import Session
from qcdr_response.lifecycle.models import FindingRow
from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.models import DeadLetterRow, OutputQueueRow
from qcdr_response.outputs.resolve import enqueue_resolve

router = APIRouter(prefix="/v1", tags=["outputs"])
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SinkRead(BaseModel):
    name: str
    type: str
    destination: str = Field(description="Where it delivers, secrets redacted.")
    enabled: bool
    min_severity: str
    pending: int
    delivered: int
    dead_letters: int
    oldest_pending_at: datetime | None


class DeadLetterRead(BaseModel):
    id: int
    message_id: str
    sink: str
    kind: str
    group_key: str
    attempts: int
    reason: str
    last_error: str | None
    created_at: datetime
    dead_at: datetime
    payload: dict[str, Any]


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


class Closed(BaseModel):
    finding_id: str
    closed_at: datetime
    closed_by: str
    resolved_in: list[str] = Field(description="Sinks that get a resolve message.")


def _configs(request: Request) -> list[SinkConfig]:
    configs: list[SinkConfig] = getattr(request.app.state, "output_configs", [])
    return configs


def _describe(request: Request, config: SinkConfig) -> str:
    sinks = getattr(request.app.state, "output_sinks", {})
    sink = sinks.get(config.name)
    return sink.describe() if sink is not None else str(getattr(config, "type", ""))


def _wake(request: Request) -> None:
    wake = getattr(request.app.state, "wake_outputs", None)
    if wake is not None:
        wake()


@router.get("/outputs", response_model=list[SinkRead], summary="The sinks and their queues")
async def list_outputs(request: Request, session: Session, _: ReadPrincipal) -> list[SinkRead]:
    counts: dict[tuple[str, str], int] = {}
    oldest: dict[str, datetime] = {}
    rows = await session.execute(
        select(
            OutputQueueRow.sink, OutputQueueRow.state, func.count(), func.min(OutputQueueRow.created_at)
        ).group_by(OutputQueueRow.sink, OutputQueueRow.state)
    )
    for sink, state, n, first in rows:
        counts[(sink, state)] = n
        if state == "pending":
            oldest[sink] = first
    dead = dict(
        (await session.execute(select(DeadLetterRow.sink, func.count()).group_by(DeadLetterRow.sink)))
        .tuples()
        .all()
    )
    return [
        SinkRead(
            name=c.name,
            type=str(getattr(c, "type", "")),
            destination=_describe(request, c),
            enabled=c.enabled,
            min_severity=c.min_severity.value,
            pending=counts.get((c.name, "pending"), 0),
            delivered=counts.get((c.name, "delivered"), 0),
            dead_letters=dead.get(c.name, 0),
            oldest_pending_at=oldest.get(c.name),
        )
        for c in _configs(request)
    ]


@router.get("/outputs/dead-letters", response_model=Page[DeadLetterRead], summary="Undeliverable messages")
async def dead_letters(
    session: Session,
    page: PageParams,
    _: ReadPrincipal,
    sink: Annotated[str | None, Query(pattern=_NAME, max_length=63)] = None,
) -> Page[DeadLetterRead]:
    stmt = select(DeadLetterRow)
    if sink is not None:
        stmt = stmt.where(DeadLetterRow.sink == sink)
    col = DeadLetterRow.__table__.c.id
    rows = list((await session.execute(keyset(stmt, page, col, col))).scalars())
    items, next_cursor = split_page(rows, page, key=lambda r: (r.id, r.id))
    return Page[DeadLetterRead](
        items=[DeadLetterRead.model_validate(r, from_attributes=True) for r in items], next_cursor=next_cursor
    )


@router.post(
    "/outputs/dead-letters/{dead_id}/retry",
    status_code=202,
    summary="Queue a dead letter again (max age restarts)",
)
async def retry_dead_letter(
    dead_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request, session: Session, _: WritePrincipal
) -> dict[str, str]:
    row = await session.get(DeadLetterRow, dead_id)
    if row is None:
        raise ApiError(404, f"no dead letter with id {dead_id}", reason="dead_letter_not_found")
    if row.sink not in {c.name for c in _configs(request)}:
        raise ApiError(409, f"sink {row.sink!r} is not configured any more", reason="sink_not_configured")
    now = datetime.now(UTC)
    session.add(
        OutputQueueRow(
            message_id=row.message_id,  # the same idempotency key: a sink that got it dedupes it
            sink=row.sink,
            kind=row.kind,
            group_key=row.group_key,
            count=int(row.payload.get("count", 1)),
            state="pending",
            payload=row.payload,
            created_at=now,
            next_attempt_at=now,
        )
    )
    await session.execute(delete(DeadLetterRow).where(DeadLetterRow.id == dead_id))
    await session.commit()
    _wake(request)
    return {"message_id": row.message_id, "state": "pending"}


@router.post(
    "/findings/{finding_id}/close", response_model=Closed, summary="Close a finding; sinks resolve it"
)
async def close_finding(
    finding_id: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")],
    request: Request,
    session: Session,
    principal: WritePrincipal,
    body: Annotated[CloseRequest | None, Body()] = None,
) -> Closed:
    row = await session.scalar(select(FindingRow).where(FindingRow.id == finding_id).with_for_update())
    if row is None:
        raise ApiError(404, f"no finding with id {finding_id}", reason="finding_not_found")
    if row.closed_at is not None:
        raise ApiError(
            409, f"finding {finding_id} was closed at {row.closed_at.isoformat()}", reason="already_closed"
        )
    row.closed_at, row.closed_by = datetime.now(UTC), principal.name
    finding = Finding.model_validate(row.payload)
    settings = request.app.state.settings
    told = await enqueue_resolve(session, _configs(request), finding, cluster_id=settings.cluster_id)
    closed_at = row.closed_at
    await session.commit()
    _wake(request)
    return Closed(finding_id=finding_id, closed_at=closed_at, closed_by=principal.name, resolved_in=told)
