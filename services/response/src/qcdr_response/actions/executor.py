"""The response service's executor: it takes requests from ``response:actions`` (cluster and
policy actions, and node actions whose node must be looked up) and results from the node agents
on ``response:action-results``.

Per request: record the intent (state ``running``) and commit, act, then record the result in a
second transaction. A crash in between leaves the request unacknowledged with its intent
recorded; on redelivery the executor asks the action whether its effect is already in place
(``present``) and records "done (recovered)", "skipped: target gone", or acts only then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from qcdr_common.contracts.actions.v1 import (
    ACTION_COMPLETED,
    ActionOp,
    ActionOutcome,
    ActionRequest,
    ActionResult,
)
from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import Delivery
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response.actions import execution, resolve, service
from qcdr_response.actions.base import (
    Action,
    ActionError,
    Done,
    InvalidRequestError,
    Scope,
    TargetGoneError,
    rebuild_undo,
)
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionState

log = get_logger(__name__)

EXECUTOR = "response"
# A context per scope, made when first needed (the cluster client needs a configured cluster)
ContextFactory = Callable[[Scope], Awaitable[Any]]


class NoContextError(ActionError):
    """This service cannot run actions of this scope (e.g. no cluster configured)."""


async def run_action(action: Action[Any], ctx: Any, request: ActionRequest, start: execution.Start) -> Done:
    """Act (or recover) and turn every failure into an outcome; nothing raises out of here."""
    try:
        if request.op == ActionOp.UNDO:
            return await action.undo(ctx, request)
        if start == "recover" and await action.present(ctx, request):
            undo = await rebuild_undo(action, ctx, request)
            return Done(ActionOutcome.RECOVERED, "the effect was already in place", undo=undo)
        return await action.execute(ctx, request)
    except TargetGoneError as exc:
        return Done(ActionOutcome.SKIPPED, f"skipped: target gone: {exc.reason}")
    except ActionError as exc:
        return Done(ActionOutcome.FAILED, exc.reason)
    except Exception as exc:  # an action bug must not wedge the stream: record it as a failure
        log.exception("action raised", action=action.name, action_id=request.action_id)
        return Done(ActionOutcome.FAILED, f"{type(exc).__name__}: {exc}")


def result_of(request: ActionRequest, done: Done, executor: str = EXECUTOR) -> ActionResult:
    return ActionResult(
        action_id=request.action_id,
        op=request.op,
        action=request.action,
        attempt=request.attempt,
        outcome=done.outcome,
        message=done.message[:4000],
        details=done.details,
        undo=done.undo,
        executor=executor,
        finished_at=datetime.now(UTC),
    )


class ActionExecutor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ctx: ActionsContext,
        contexts: ContextFactory,
        *,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.contexts = contexts
        self.after_commit = after_commit or (lambda: None)

    async def handle_requests(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            request = delivery.envelope.payload_as(ActionRequest)
            await self.handle(request)

    async def handle_results(self, deliveries: list[Delivery]) -> None:
        """Results from node agents (each recorded once, whatever the redeliveries)."""
        for delivery in deliveries:
            if delivery.envelope.type != ACTION_COMPLETED:
                continue
            result = delivery.envelope.payload_as(ActionResult)
            async with self.sessions.begin() as session:
                try:
                    await execution.record_result(session, self.ctx, result)
                except service.ActionNotFoundError:
                    log.warning("result for an unknown action", action_id=result.action_id)
        self.after_commit()

    async def handle(self, request: ActionRequest) -> None:
        try:
            action = service.action_for(request.action)
        except InvalidRequestError as exc:
            await self._record(request, Done(ActionOutcome.FAILED, exc.reason), start=None)
            return
        if action.scope == Scope.NODE:
            await self._forward(request)
            return
        async with self.sessions.begin() as session:
            try:
                start = await execution.begin_execution(
                    session, request.action_id, request.op, request.attempt, EXECUTOR
                )
            except service.ActionNotFoundError:
                log.warning("request for an unknown action", action_id=request.action_id)
                return
        if start == "duplicate":
            return
        try:
            ctx = await self.contexts(action.scope)
        except ActionError as exc:
            done = Done(ActionOutcome.FAILED, exc.reason)
        else:
            done = await run_action(action, ctx, request, start)
        await self._record(request, done, start=start)

    async def _record(self, request: ActionRequest, done: Done, *, start: execution.Start | None) -> None:
        async with self.sessions.begin() as session:
            if start is None:  # never began (unknown action): move it to running so the result fits
                row = await service.locked(session, request.action_id)
                if row.state == ActionState.QUEUED.value:
                    row.state = ActionState.RUNNING.value
            await execution.record_result(session, self.ctx, result_of(request, done))
        self.after_commit()

    async def _forward(self, request: ActionRequest) -> None:
        """A node action without a node: look the pod up, then send it to that node's agent."""
        async with self.sessions.begin() as session:
            row = await service.locked(session, request.action_id)
            if row.state != ActionState.QUEUED.value or row.attempt != request.attempt or row.node:
                return
            try:
                client = await self.contexts(Scope.CLUSTER)
                target = await resolve.node_target(client.client, request.target)
            except ActionError as exc:
                outcome = ActionOutcome.SKIPPED if isinstance(exc, TargetGoneError) else ActionOutcome.FAILED
                row.state = ActionState.RUNNING.value
                await execution.record_result(
                    session, self.ctx, result_of(request, Done(outcome, exc.reason))
                )
            else:
                await execution.forward_to_node(session, self.ctx, row, target)
        self.after_commit()
