"""What executors report, inside the caller's transaction: the intent recorded before acting
(which tells a redelivery after a crash from a first delivery), the result recorded once per
attempt, and a node action forwarded to its node once the node is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome, ActionResult, ActionTarget
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.actions import audit, dispatch, service
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.metrics import ACTIONS_FAILED, ACTIONS_OUTCOMES, ACTIONS_TOTAL
from qcdr_response.actions.models import ActionRow, ActionState

_RESULT_STATE = {
    ActionOutcome.SUCCEEDED: ActionState.SUCCEEDED,
    ActionOutcome.RECOVERED: ActionState.SUCCEEDED,
    ActionOutcome.DRY_RUN: ActionState.DRY_RUN,
    ActionOutcome.FAILED: ActionState.FAILED,
    ActionOutcome.SKIPPED: ActionState.SKIPPED,
}


Start = Literal["run", "recover", "duplicate"]


async def begin_execution(
    session: AsyncSession, action_id: int, op: ActionOp, attempt: int, executor: str
) -> Start:
    """Record the intent before acting. A request whose intent is already recorded with no result
    is a redelivery after a crash: ``recover`` (check the effect first). Anything else that does not
    match the row (an old attempt, a finished action) is a ``duplicate`` to drop."""
    row = await service.locked(session, action_id)
    if row.attempt != attempt:
        return "duplicate"
    if op == ActionOp.EXECUTE:
        if row.state == ActionState.QUEUED.value:
            await service.set_state(session, row, ActionState.RUNNING)
            await audit.record(session, row, executor, "intent", op=op.value)
            return "run"
        return "recover" if row.state == ActionState.RUNNING.value else "duplicate"
    if row.state == ActionState.RELEASING.value:
        await audit.record(session, row, executor, "intent", op=op.value)
        return "run"  # undo is idempotent (already gone is fine), so a redelivery just runs it again
    return "duplicate"


async def record_result(session: AsyncSession, ctx: ActionsContext, result: ActionResult) -> ActionRow | None:
    """Store an executor's result once (None for a duplicate) and move the run on."""
    row = await service.locked(session, result.action_id)
    if row.attempt != result.attempt:
        return None
    now = datetime.now(UTC)
    no_lease: str | None = None
    if result.op == ActionOp.EXECUTE:
        if row.state not in (ActionState.QUEUED.value, ActionState.RUNNING.value):
            return None
        state = _RESULT_STATE[result.outcome]
        message = result.message or result.outcome.value
        if result.outcome == ActionOutcome.RECOVERED:
            message = f"done (recovered): {result.message}" if result.message else "done (recovered)"
        lease_end = None
        if state == ActionState.SUCCEEDED and row.containment and not row.dry_run and row.lease_seconds:
            if result.undo is None:
                # a recovery that could not rebuild the undo record: the containment stands, but
                # nothing could release it when a lease ended (that blocked every other release)
                no_lease = "no undo record, so no lease: it stays until removed by hand"
                message = f"{message}; {no_lease}"
            else:
                lease_end = now + timedelta(seconds=row.lease_seconds)
        await service.set_state(
            session,
            row,
            state,
            outcome=result.outcome.value,
            message=message,
            details=result.details,
            undo=result.undo,
            finished_at=now,
            lease_expires_at=lease_end,
        )
    else:
        if row.state != ActionState.RELEASING.value:
            return None
        undone = result.outcome in (ActionOutcome.SUCCEEDED, ActionOutcome.RECOVERED, ActionOutcome.SKIPPED)
        state = ActionState.RELEASED if undone else ActionState.UNDO_FAILED
        await service.set_state(
            session,
            row,
            state,
            message=result.message,
            released_at=now if undone else None,
            lease_expires_at=None if undone else row.lease_expires_at,
        )
    ACTIONS_OUTCOMES.labels(row.action, result.op.value, result.outcome.value).inc()
    # the seed's counters count actions taken; an undo is only in the outcomes counter (op="undo")
    if result.op == ActionOp.EXECUTE:
        ACTIONS_TOTAL.labels(row.action).inc()
        if result.outcome == ActionOutcome.FAILED:
            ACTIONS_FAILED.labels(row.action).inc()
    await audit.record(
        session,
        row,
        result.executor,
        "result" if result.op == ActionOp.EXECUTE else "undo_result",
        outcome=result.outcome.value,
        message=result.message,
        details=result.details,
        **({"no_lease": no_lease} if no_lease else {}),
    )
    if result.op == ActionOp.EXECUTE:
        await service.after_step(session, ctx, row, result.executor)
    return row


async def forward_to_node(
    session: AsyncSession, ctx: ActionsContext, row: ActionRow, target: ActionTarget
) -> None:
    """A node action whose node the executor looked up: store the completed target and send it to
    that node's agent."""
    row.target = target.model_dump(mode="json", exclude_none=True)
    await service.set_state(session, row, ActionState.QUEUED, node=target.node)
    await dispatch.send(session, row, ActionOp.EXECUTE, ctx.cluster_id)
    await audit.record(session, row, "executor", "forwarded", node=target.node)
