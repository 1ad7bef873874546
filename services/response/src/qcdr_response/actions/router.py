"""``/v1/actions``: list, inspect, request, approve, reject, renew and undo response actions.

Reads need the read scope, everything else the write scope (the middleware enforces it; the
dependencies document it). Errors are problem details with a stable ``reason``:
``action_not_found`` (404), ``invalid_action`` (422), ``illegal_transition`` (409),
``actions_disabled`` (409).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import Page, PageParams, keyset, split_page
from qcdr_common.streams.envelope import uuid7
from sqlalchemy import select

from qcdr_response.actions import audit, service
from qcdr_response.actions.base import InvalidRequestError
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow, ActionState
from qcdr_response.actions.registry import load_actions
from qcdr_response.actions.schemas import (
    ActionCreate,
    ActionDetail,
    ActionRead,
    AuditRead,
    CatalogEntry,
    Decision,
    Renewal,
)
from qcdr_response.actions.stats import ActionStats, action_stats
from qcdr_response.deps import Session

router = APIRouter(prefix="/v1", tags=["actions"])
ActionId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The action's id.")]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$"


def _ctx(request: Request) -> ActionsContext:
    ctx: ActionsContext | None = getattr(request.app.state, "actions", None)
    if ctx is None:
        raise ApiError(
            409, "response actions are turned off (QCDR_ACTIONS_ENABLED=false)", reason="actions_disabled"
        )
    return ctx


def _notify(request: Request) -> None:
    wake = getattr(request.app.state, "wake_relay", None)
    if wake is not None:
        wake()


async def _detail(session: Session, row: ActionRow) -> ActionDetail:
    trail = await audit.trail(session, row.id)
    return ActionDetail(**ActionRead.of(row).model_dump(), audit=[AuditRead.of(a) for a in trail])


@router.get("/actions", response_model=Page[ActionRead], summary="List actions, newest first")
async def list_actions(
    session: Session,
    page: PageParams,
    _: ReadPrincipal,
    state: Annotated[ActionState | None, Query(description="Only actions in this state.")] = None,
    action: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{1,48}$")] = None,
    finding_id: Annotated[str | None, Query(pattern=_NAME)] = None,
    playbook: Annotated[str | None, Query(pattern=_NAME)] = None,
) -> Page[ActionRead]:
    stmt = select(ActionRow)
    if state is not None:
        stmt = stmt.where(ActionRow.state == state.value)
    if action is not None:
        stmt = stmt.where(ActionRow.action == action)
    if finding_id is not None:
        stmt = stmt.where(ActionRow.finding_id == finding_id)
    if playbook is not None:
        stmt = stmt.where(ActionRow.playbook == playbook)
    col = ActionRow.__table__.c.id
    rows = list((await session.execute(keyset(stmt, page, col, col))).scalars())
    items, next_cursor = split_page(rows, page, key=lambda r: (r.id, r.id))
    return Page[ActionRead](items=[ActionRead.of(r) for r in items], next_cursor=next_cursor)


@router.get("/actions/catalog", response_model=list[CatalogEntry], summary="The actions this service can run")
async def catalog(_: ReadPrincipal) -> list[CatalogEntry]:
    return [
        CatalogEntry(
            name=a.name,
            scope=a.scope.value,
            description=a.description,
            requires=list(a.requires),
            containment=a.containment,
            reversible=a.reversible,
            permissions=list(a.permissions),
            parameters=a.params.model_json_schema(),
        )
        for a in sorted(load_actions(), key=lambda a: a.name)
    ]


@router.get("/actions/stats", response_model=ActionStats, summary="Detection to action, in a window")
async def stats(
    session: Session,
    _: ReadPrincipal,
    since: Annotated[datetime | None, Query(description="Start (default: 24 hours ago).")] = None,
    until: Annotated[datetime | None, Query(description="End (default: now).")] = None,
) -> ActionStats:
    if any(t is not None and t.tzinfo is None for t in (since, until)):
        raise ApiError(422, "since and until need a time zone (e.g. Z)", reason="invalid_time_range")
    try:  # times at the ends of the calendar (year 1, year 9999) overflow on the way to UTC
        end = (until or datetime.now(UTC)).astimezone(UTC)
        start = (since or end - timedelta(hours=24)).astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "since or until is out of range", reason="invalid_time_range") from None
    if start >= end:
        raise ApiError(422, "since must be before until", reason="invalid_time_range")
    return await action_stats(session, start, end)


@router.get("/actions/{action_id}", response_model=ActionDetail, summary="An action with its audit trail")
async def get_action(action_id: ActionId, session: Session, _: ReadPrincipal) -> ActionDetail:
    row = await session.get(ActionRow, action_id)
    if row is None:
        raise ApiError(404, f"no action with id {action_id}", reason="action_not_found")
    return await _detail(session, row)


@router.post("/actions", response_model=ActionDetail, status_code=201, summary="Request an action")
async def create_action(
    body: ActionCreate, request: Request, session: Session, principal: WritePrincipal
) -> ActionDetail:
    ctx = _ctx(request)
    step = service.StepRequest(
        action=body.action,
        target=body.target,
        parameters=body.parameters,
        require_approval=body.require_approval,
        lease_seconds=body.lease,
        dry_run=body.dry_run,
    )
    try:
        rows = await service.start_run(
            session,
            ctx,
            run_id=f"api:{uuid7()}",
            steps=[step],
            requested_by=principal.name,
            reason=body.reason,
            finding_id=body.finding_id,
        )
    except InvalidRequestError as exc:
        raise ApiError(422, exc.reason, reason="invalid_action") from None
    await session.commit()
    _notify(request)
    return await _detail(session, rows[0])


async def _decide(request: Request, session: Session, op: service.Decision) -> ActionDetail:
    try:
        row = await op(session, _ctx(request))
    except service.ActionNotFoundError as exc:
        raise ApiError(404, f"no action with id {exc.args[0]}", reason="action_not_found") from None
    except service.ActionTransitionError as exc:
        raise ApiError(409, exc.reason, reason="illegal_transition") from None
    await session.commit()
    _notify(request)
    return await _detail(session, row)


Note = Annotated[Decision | None, Body()]


@router.post("/actions/{action_id}/approve", response_model=ActionDetail, summary="pending → queued")
async def approve(
    action_id: ActionId, request: Request, session: Session, principal: WritePrincipal, body: Note = None
) -> ActionDetail:
    note = body.note if body else ""
    return await _decide(
        request, session, lambda s, c: service.approve(s, c, action_id, principal.name, note)
    )


@router.post("/actions/{action_id}/reject", response_model=ActionDetail, summary="pending → rejected")
async def reject(
    action_id: ActionId, request: Request, session: Session, principal: WritePrincipal, body: Note = None
) -> ActionDetail:
    note = body.note if body else ""
    return await _decide(request, session, lambda s, c: service.reject(s, c, action_id, principal.name, note))


@router.post("/actions/{action_id}/renew", response_model=ActionDetail, summary="Extend a containment lease")
async def renew(
    action_id: ActionId,
    request: Request,
    session: Session,
    principal: WritePrincipal,
    body: Annotated[Renewal | None, Body()] = None,
) -> ActionDetail:
    lease = body.lease if body else None
    return await _decide(request, session, lambda s, c: service.renew(s, c, action_id, principal.name, lease))


@router.post("/actions/{action_id}/undo", response_model=ActionDetail, summary="Reverse a succeeded action")
async def undo(
    action_id: ActionId, request: Request, session: Session, principal: WritePrincipal, body: Note = None
) -> ActionDetail:
    note = body.note if body else ""
    return await _decide(request, session, lambda s, c: service.undo(s, c, action_id, principal.name, note))
