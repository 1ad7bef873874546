"""Turning an action row into a request on the right stream, through the outbox (so a request
leaves only if the transaction that decided it commits)."""

from __future__ import annotations

from datetime import UTC, datetime

from qcdr_common.contracts.actions.v1 import ACTION_REQUESTED, ActionOp, ActionRequest, ActionTarget
from qcdr_common.streams.envelope import new_envelope
from qcdr_common.streams.outbox import enqueue
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response import streams
from qcdr_response.actions.base import Scope
from qcdr_response.actions.models import ActionRow
from qcdr_response.db.models import outbox


def request_of(row: ActionRow, op: ActionOp) -> ActionRequest:
    return ActionRequest(
        action_id=row.id,
        op=op,
        action=row.action,
        target=ActionTarget.model_validate(row.target),
        parameters=row.parameters,
        dry_run=row.dry_run,
        reason=row.reason,
        finding_id=row.finding_id,
        undo=row.undo if op == ActionOp.UNDO else None,
        attempt=row.attempt,
        requested_at=datetime.now(UTC),
    )


def stream_for(row: ActionRow) -> str:
    """Node actions go to their node's agent once the node is known; everything else (and a node
    action whose node must first be looked up in the cluster) to the response executor."""
    if row.scope == Scope.NODE.value and row.node:
        return streams.node_actions_stream(row.node)
    return streams.ACTIONS


async def send(session: AsyncSession, row: ActionRow, op: ActionOp, cluster_id: str) -> None:
    request = request_of(row, op)
    envelope = new_envelope(
        ACTION_REQUESTED,
        request,
        source="response",
        cluster_id=cluster_id,
        occurred_at=request.requested_at,
    )
    await enqueue(session, outbox, stream_for(row), [envelope])
