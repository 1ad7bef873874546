"""The decision log's queries (the writes are COPYs in :mod:`.writer`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from qcdr_common.api.pagination import PageRequest, keyset
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_admission.decisions.models import DecisionRow


async def list_decisions(
    session: AsyncSession,
    page: PageRequest,
    *,
    namespace: str | None = None,
    allowed: bool | None = None,
    check: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
) -> Sequence[DecisionRow]:
    """Newest first, ``page.limit + 1`` rows (keyset on time, id)."""
    stmt = select(DecisionRow)
    if namespace is not None:
        stmt = stmt.where(DecisionRow.namespace == namespace)
    if allowed is not None:
        stmt = stmt.where(DecisionRow.allowed.is_(allowed))
    if check is not None:
        stmt = stmt.where(DecisionRow.checks.contains([check]))
    if kind is not None:
        stmt = stmt.where(DecisionRow.kind == kind)
    if since is not None:
        stmt = stmt.where(DecisionRow.time >= since)
    stmt = keyset(stmt, page, DecisionRow.__table__.c.time, DecisionRow.__table__.c.id)
    return (await session.scalars(stmt)).all()
