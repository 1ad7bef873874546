"""Commands for spokes: queued by an operator, handed to the spoke's long poll (again if it does
not answer within ``command_redeliver_s``: the spoke may have crashed holding it), answered once,
expired after ``command_ttl_s``. The spoke's response API decides idempotency of the action itself
(approving an approved action is a 409 there), so a redelivered command is safe."""

from __future__ import annotations

from datetime import datetime, timedelta

from qcdr_common.contracts.federation.v1 import CommandKind, CommandResult, SpokeCommand
from qcdr_common.streams.envelope import uuid7
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.hub.commands.models import CommandRow, CommandState

OPEN_STATES = (CommandState.PENDING.value, CommandState.DELIVERED.value)
MAX_PER_POLL = 50


def new_command_id() -> str:
    return f"cmd-{uuid7()}"


async def create(
    session: AsyncSession,
    *,
    cluster_id: str,
    kind: CommandKind,
    action_id: str,
    reason: str | None,
    lease_s: int | None,
    requested_by: str,
    now: datetime,
) -> CommandRow:
    row = CommandRow(
        id=new_command_id(),
        cluster_id=cluster_id,
        kind=kind.value,
        action_id=action_id,
        reason=reason,
        lease_s=lease_s if kind is CommandKind.RENEW else None,
        requested_by=requested_by,
        created_at=now,
        state=CommandState.PENDING.value,
    )
    session.add(row)
    await session.flush()
    return row


async def claim(
    session: AsyncSession,
    cluster_id: str,
    *,
    now: datetime,
    redeliver_s: float,
    ttl_s: float,
    limit: int = MAX_PER_POLL,
) -> list[CommandRow]:
    """The spoke's due commands, marked delivered: pending ones, and delivered ones whose answer
    is overdue; oldest first. Rows another replica is handing out right now are skipped."""
    due = (
        select(CommandRow.id)
        .where(
            CommandRow.cluster_id == cluster_id,
            CommandRow.created_at > now - timedelta(seconds=ttl_s),
            or_(
                CommandRow.state == CommandState.PENDING.value,
                (CommandRow.state == CommandState.DELIVERED.value)
                & (CommandRow.delivered_at <= now - timedelta(seconds=redeliver_s)),
            ),
        )
        .order_by(CommandRow.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (
        await session.scalars(
            update(CommandRow)
            .where(CommandRow.id.in_(due.scalar_subquery()))
            .values(state=CommandState.DELIVERED.value, delivered_at=now)
            .returning(CommandRow)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
    ).all()
    return sorted(rows, key=lambda r: r.created_at)


async def record_result(
    session: AsyncSession, cluster_id: str, command_id: str, result: CommandResult, now: datetime
) -> CommandRow | None:
    """Store the spoke's answer; the first answer stands (a repeat changes nothing). None when the
    command is not this cluster's. An answer after expiry is still kept: the spoke did act."""
    row = (
        await session.scalars(
            select(CommandRow)
            .where(CommandRow.id == command_id, CommandRow.cluster_id == cluster_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        return None
    if row.state != CommandState.DONE.value:
        row.state = CommandState.DONE.value
        row.status_code = result.status_code
        row.result = result.body
        row.finished_at = now
        await session.flush()
    return row


async def get(session: AsyncSession, command_id: str) -> CommandRow | None:
    return await session.get(CommandRow, command_id, populate_existing=True)


async def expire(session: AsyncSession, *, now: datetime, ttl_s: float) -> list[tuple[str, str]]:
    """Expire open commands older than the TTL; their (id, kind)."""
    rows = (
        await session.execute(
            update(CommandRow)
            .where(
                CommandRow.state.in_(OPEN_STATES),
                CommandRow.created_at <= now - timedelta(seconds=ttl_s),
            )
            .values(state=CommandState.EXPIRED.value, finished_at=now)
            .returning(CommandRow.id, CommandRow.kind)
        )
    ).all()
    return [(r[0], r[1]) for r in rows]


def to_spoke(row: CommandRow) -> SpokeCommand:
    return SpokeCommand(
        id=row.id,
        kind=CommandKind(row.kind),
        action_id=row.action_id,
        reason=row.reason,
        requested_by=row.requested_by,
        created_at=row.created_at,
        lease_s=row.lease_s,
    )
