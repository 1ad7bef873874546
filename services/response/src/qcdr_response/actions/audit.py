"""The append-only audit trail: one row per thing that happened to an action."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.actions.models import ActionRow, AuditRow


async def record(session: AsyncSession, row: ActionRow, actor: str, event: str, **detail: Any) -> None:
    """Who (``actor``: a token name, 'playbook:<name>', 'lease-expiry', 'executor', a node), what
    (``event``), and the rest in ``detail``; the finding behind the action is copied onto the row."""
    await session.execute(
        insert(AuditRow).values(
            action_id=row.id,
            actor=actor,
            event=event,
            finding_id=row.finding_id,
            detail={"state": row.state, **detail},
        )
    )


async def trail(session: AsyncSession, action_id: int) -> list[AuditRow]:
    rows = await session.scalars(
        select(AuditRow).where(AuditRow.action_id == action_id).order_by(AuditRow.id)
    )
    return list(rows)
