"""The rules of response actions, inside the caller's transaction (callers commit): runs, steps
and the decisions made through the API. What executors report is in ``execution.py``.

A *run* is the ordered steps a playbook chose for one finding (or one step asked for through the
API). Its first step starts at once: ``pending`` if it needs approval, otherwise it is checked
(protected targets, rate limits) and ``queued`` with its request in the outbox. Each later step
``waits`` until the step before it finished; a failed, skipped or rejected step cancels the rest
of its run unless it says ``continue_on_error``. A containment step that succeeded carries a lease;
when it ends (or on ``undo``) the action goes ``releasing`` and an undo request is sent.
Every change appends to the audit trail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from qcdr_common.contracts.actions.v1 import ActionOp, ActionTarget
from qcdr_common.logging import get_logger
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.actions import audit, dispatch, safety, validation
from qcdr_response.actions.base import Action, ActionError, InvalidRequestError, Scope
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow, ActionState
from qcdr_response.actions.registry import load_actions

_OK = frozenset({ActionState.SUCCEEDED.value, ActionState.DRY_RUN.value})
LEASE_EXPIRY = "lease-expiry"  # the audit actor of what the lease loop does
log = get_logger(__name__)


class ActionNotFoundError(LookupError):
    pass


class ActionTransitionError(ValueError):
    """The action is not in a state that allows this (HTTP 409)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StepRequest:
    action: str
    target: ActionTarget
    parameters: dict[str, Any] = field(default_factory=dict)
    require_approval: bool = False
    lease_seconds: int | None = None
    continue_on_error: bool = False
    dry_run: bool = False
    # values of the finding left out of ``target`` and why (playbooks), said when the step is refused
    dropped: str = ""


def action_for(name: str) -> Action[Any]:
    actions = load_actions()
    if name not in actions:
        raise InvalidRequestError(f"unknown action {name!r} (known: {', '.join(sorted(actions.names()))})")
    return actions.get(name)


def check_step(step: StepRequest, ctx: ActionsContext) -> tuple[Action[Any], BaseModel, int | None]:
    """Validate a step before anything is stored: the action exists, its parameters parse, the
    target has what it needs and every field is well-formed; the lease fits the limits."""
    action = action_for(step.action)
    params = action.parse_params(step.parameters)
    validation.target_fields(step.target)
    action.check(step.target, params)
    lease = None
    if action.containment:
        lease = step.lease_seconds or ctx.lease_default_s
        if lease > ctx.lease_max_s:
            raise InvalidRequestError(f"lease {lease}s is longer than the maximum ({ctx.lease_max_s}s)")
    elif step.lease_seconds is not None:
        raise InvalidRequestError(f"{step.action} is not a containment action: it takes no lease")
    return action, params, lease


async def start_run(
    session: AsyncSession,
    ctx: ActionsContext,
    *,
    run_id: str,
    steps: Sequence[StepRequest],
    requested_by: str,
    reason: str = "",
    playbook: str | None = None,
    finding_id: str | None = None,
    lenient: bool = False,
) -> list[ActionRow]:
    """Record a run and start its first step. A run id seen before returns [] (a redelivered
    finding never starts its playbooks twice). A step that fails validation raises
    ``InvalidRequestError`` before anything is stored, or with ``lenient`` (playbooks) is stored and
    skipped with the reason when its turn comes (say, a process action for a finding that names no
    process), so the run and the reason are visible."""
    rows: list[ActionRow] = []
    for number, step in enumerate(steps, 1):
        invalid: str | None = None
        try:
            action, params, lease = check_step(step, ctx)
            name, scope, containment, parameters = (
                action.name,
                action.scope,
                action.containment,
                params.model_dump(mode="json"),
            )
        except InvalidRequestError as exc:
            if not lenient:
                raise
            invalid, lease = exc.reason, None
            if step.dropped:
                invalid += f" (left out of the finding's target: {step.dropped})"
            known = load_actions()
            spec = known.get(step.action) if step.action in known else None
            name, scope = step.action, spec.scope if spec else Scope.CLUSTER
            containment, parameters = bool(spec and spec.containment), step.parameters
        values = {
            "run_id": run_id,
            "step": number,
            "playbook": playbook,
            "action": name,
            "scope": scope.value,
            "state": ActionState.WAITING.value,
            "dry_run": step.dry_run or not ctx.enforce,
            "target": step.target.model_dump(mode="json", exclude_none=True),
            "parameters": parameters,
            "finding_id": finding_id,
            "reason": reason,
            "requested_by": requested_by,
            "require_approval": step.require_approval,
            "continue_on_error": step.continue_on_error,
            "node": step.target.node if scope == Scope.NODE else None,
            "containment": containment,
            "lease_seconds": lease,
            "details": {"invalid": invalid} if invalid else None,
        }
        stmt = (
            insert(ActionRow)
            .values(**values)
            .on_conflict_do_nothing(constraint="uq_response_actions_run_step")
        )
        row_id = await session.scalar(stmt.returning(ActionRow.id))
        if row_id is None:
            return []
        row = await session.get_one(ActionRow, row_id)
        rows.append(row)
        await audit.record(session, row, requested_by, "requested", playbook=playbook, reason=reason)
    await _begin(session, ctx, rows[0], requested_by)
    return rows


async def _begin(session: AsyncSession, ctx: ActionsContext, row: ActionRow, actor: str) -> None:
    invalid = (row.details or {}).get("invalid")
    if invalid:
        await finish(session, row, ActionState.SKIPPED, f"cannot run on this target: {invalid}")
        await audit.record(session, row, actor, "refused", message=invalid)
        await after_step(session, ctx, row, actor)
    elif row.require_approval:
        await set_state(session, row, ActionState.PENDING)
        await audit.record(session, row, actor, "awaiting_approval")
    else:
        await _queue(session, ctx, row, actor)


async def _queue(session: AsyncSession, ctx: ActionsContext, row: ActionRow, actor: str) -> None:
    now = datetime.now(UTC)
    target = ActionTarget.model_validate(row.target)
    refused = safety.protection(target, ctx) or await safety.rate_limited(session, row, target, ctx, now)
    if refused is not None:
        await finish(session, row, ActionState.SKIPPED, refused, now=now)
        await audit.record(session, row, actor, "refused", message=refused)
        await after_step(session, ctx, row, actor)
        return
    await set_state(session, row, ActionState.QUEUED, started_at=now)
    await dispatch.send(session, row, ActionOp.EXECUTE, ctx.cluster_id)
    await audit.record(session, row, actor, "queued", dry_run=row.dry_run, stream=dispatch.stream_for(row))


async def after_step(session: AsyncSession, ctx: ActionsContext, row: ActionRow, actor: str) -> None:
    """Start the next step of the run, or cancel the rest if this one did not work out."""
    nxt = await session.scalar(
        select(ActionRow)
        .where(ActionRow.run_id == row.run_id, ActionRow.step == row.step + 1)
        .with_for_update()
    )
    if nxt is None or nxt.state != ActionState.WAITING.value:
        return
    if row.state in _OK or row.continue_on_error:
        await _begin(session, ctx, nxt, actor)
        return
    rest = await session.scalars(
        select(ActionRow)
        .where(
            ActionRow.run_id == row.run_id,
            ActionRow.step > row.step,
            ActionRow.state == ActionState.WAITING.value,
        )
        .order_by(ActionRow.step)
        .with_for_update()
    )
    why = f"step {row.step} ({row.action}) ended {row.state}"
    for later in rest:
        await finish(session, later, ActionState.CANCELLED, why)
        await audit.record(session, later, actor, "cancelled", message=why)


async def set_state(session: AsyncSession, row: ActionRow, state: ActionState, **values: Any) -> None:
    row.state = state.value
    row.updated_at = datetime.now(UTC)
    for key, value in values.items():
        setattr(row, key, value)
    await session.flush()


async def finish(
    session: AsyncSession, row: ActionRow, state: ActionState, message: str, *, now: datetime | None = None
) -> None:
    await set_state(session, row, state, message=message, finished_at=now or datetime.now(UTC))


async def locked(session: AsyncSession, action_id: int) -> ActionRow:
    row = await session.scalar(select(ActionRow).where(ActionRow.id == action_id).with_for_update())
    if row is None:
        raise ActionNotFoundError(action_id)
    return row


# what the API routes call: (session, context) -> the changed row
Decision = Callable[[AsyncSession, ActionsContext], Awaitable[ActionRow]]


# --- decisions through the API ------------------------------------------------------------------


async def approve(
    session: AsyncSession, ctx: ActionsContext, action_id: int, actor: str, note: str = ""
) -> ActionRow:
    row = await locked(session, action_id)
    if row.state != ActionState.PENDING.value:
        raise ActionTransitionError(f"action {action_id} is {row.state}, not pending approval")
    row.decided_by, row.decided_at, row.decision_note = actor, datetime.now(UTC), note
    await audit.record(session, row, actor, "approved", note=note)
    await _queue(session, ctx, row, actor)
    return row


async def reject(
    session: AsyncSession, ctx: ActionsContext, action_id: int, actor: str, note: str = ""
) -> ActionRow:
    row = await locked(session, action_id)
    if row.state != ActionState.PENDING.value:
        raise ActionTransitionError(f"action {action_id} is {row.state}, not pending approval")
    await finish(session, row, ActionState.REJECTED, f"rejected by {actor}" + (f": {note}" if note else ""))
    row.decided_by, row.decided_at, row.decision_note = actor, datetime.now(UTC), note
    await audit.record(session, row, actor, "rejected", note=note)
    await after_step(session, ctx, row, actor)
    return row


async def renew(
    session: AsyncSession, ctx: ActionsContext, action_id: int, actor: str, seconds: int | None = None
) -> ActionRow:
    row = await locked(session, action_id)
    if not row.containment or row.state != ActionState.SUCCEEDED.value or row.lease_expires_at is None:
        raise ActionTransitionError(f"action {action_id} holds no running lease (state {row.state})")
    now = datetime.now(UTC)
    seconds = seconds or row.lease_seconds or ctx.lease_default_s
    if seconds > ctx.lease_max_s:
        raise ActionTransitionError(f"a lease of {seconds}s is longer than the maximum ({ctx.lease_max_s}s)")
    before = row.lease_expires_at
    await set_state(
        session, row, ActionState.SUCCEEDED, lease_expires_at=max(before, now + timedelta(seconds=seconds))
    )
    await audit.record(
        session, row, actor, "renewed", before=before.isoformat(), until=row.lease_expires_at.isoformat()
    )
    return row


async def undo(
    session: AsyncSession, ctx: ActionsContext, action_id: int, actor: str, note: str = ""
) -> ActionRow:
    row = await locked(session, action_id)
    action = action_for(row.action)
    if not action.reversible:
        raise ActionTransitionError(f"{row.action} cannot be undone")
    if row.dry_run:
        raise ActionTransitionError(f"action {action_id} was a dry run: it changed nothing to undo")
    if row.state not in (ActionState.SUCCEEDED.value, ActionState.UNDO_FAILED.value):
        raise ActionTransitionError(
            f"action {action_id} is {row.state}: only a succeeded action can be undone"
        )
    if row.undo is None:
        raise ActionTransitionError(f"action {action_id} recorded nothing to undo")
    row.attempt += 1
    await set_state(session, row, ActionState.RELEASING)
    await dispatch.send(session, row, ActionOp.UNDO, ctx.cluster_id)
    await audit.record(session, row, actor, "undo_requested", note=note)
    return row


async def expire_leases(
    session: AsyncSession, ctx: ActionsContext, now: datetime, limit: int = 100
) -> list[int]:
    """Undo containment whose lease has ended (several workers may run this: SKIP LOCKED); returns
    the ids now releasing. Each in a savepoint: one that cannot be undone (no undo record, an
    action this version no longer has) goes ``undo_failed`` with the reason, and the rest are
    still released (it used to roll the round back, and stayed first in line every round)."""
    ids = list(
        await session.scalars(
            select(ActionRow.id)
            .where(
                ActionRow.state == ActionState.SUCCEEDED.value,
                ActionRow.containment.is_(True),
                ActionRow.lease_expires_at <= now,
            )
            .order_by(ActionRow.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    releasing = []
    for action_id in ids:
        try:
            async with session.begin_nested():
                await undo(session, ctx, action_id, LEASE_EXPIRY, "the lease ended")
        except (ActionError, ActionTransitionError, ValidationError) as exc:
            why = f"the lease ended, but it cannot be undone: {_reason(exc)}"
            row = await locked(session, action_id)
            await set_state(session, row, ActionState.UNDO_FAILED, message=why)
            await audit.record(session, row, LEASE_EXPIRY, "refused", op=ActionOp.UNDO.value, message=why)
            log.warning("lease ended on an action that cannot be undone", action_id=action_id, reason=why)
            continue
        releasing.append(action_id)
    return releasing


def _reason(exc: ActionError | ActionTransitionError | ValidationError) -> str:
    """One line: an action error's reason, or the first problem of a stored row that no longer
    parses (a target or parameters written by an older version)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"stored {exc.title}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return exc.reason
