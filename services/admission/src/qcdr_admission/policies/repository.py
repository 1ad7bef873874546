"""All SQL of the admission policies. Writers bump the set's generation in the same transaction
(``UPDATE … RETURNING`` takes the row lock, so concurrent writers serialise and every change gets
its own generation). The caller commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_admission.policies.models import PolicyRow, PolicyStateRow


async def generation(session: AsyncSession) -> int:
    value = await session.scalar(select(PolicyStateRow.generation).where(PolicyStateRow.id == 1))
    return int(value or 0)


async def _bump(session: AsyncSession) -> int:
    value = await session.scalar(
        update(PolicyStateRow)
        .where(PolicyStateRow.id == 1)
        .values(generation=PolicyStateRow.generation + 1)
        .returning(PolicyStateRow.generation)
    )
    if value is None:
        raise RuntimeError("admission_policy_state has no row: run `qcdr-admission db upgrade`")
    return int(value)


async def list_all(session: AsyncSession) -> list[PolicyRow]:
    return list((await session.scalars(select(PolicyRow).order_by(PolicyRow.name))).all())


async def snapshot(session: AsyncSession) -> tuple[int, list[PolicyRow]]:
    """The generation and the rows it describes, read in one statement's snapshot each; the
    caller runs both in one REPEATABLE READ transaction (see :mod:`reload`)."""
    return await generation(session), await list_all(session)


async def get(session: AsyncSession, name: str, *, for_update: bool = False) -> PolicyRow | None:
    return await session.get(PolicyRow, name, with_for_update=for_update)


async def create(session: AsyncSession, name: str, spec: dict[str, Any], enabled: bool, by: str) -> PolicyRow:
    gen = await _bump(session)
    row = PolicyRow(name=name, spec=spec, enabled=enabled, version=1, generation=gen, updated_by=by)
    session.add(row)
    await session.flush()
    return row


async def replace(
    session: AsyncSession, row: PolicyRow, spec: dict[str, Any], enabled: bool, by: str
) -> PolicyRow:
    row.generation = await _bump(session)
    row.spec = spec
    row.enabled = enabled
    row.version += 1
    row.updated_by = by
    row.updated_at = func.now()
    await session.flush()
    await session.refresh(row)
    return row


async def remove(session: AsyncSession, name: str) -> bool:
    deleted = await session.execute(delete(PolicyRow).where(PolicyRow.name == name).returning(PolicyRow.name))
    if deleted.first() is None:
        return False
    await _bump(session)
    return True
