"""The decision log's queries (the writes are COPYs in :mod:`.writer`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from qcdr_common.api.pagination import PageRequest, keyset
from sqlalchemy import func, select, text
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


# A denial is made by its enforce-mode violations (warn and audit results ride along on allowed
# and denied answers alike), so checks are counted from those, once per decision.
_DENIED_BY_CHECK = text(
    """
    SELECT key, count(*) AS n FROM (
        SELECT DISTINCT d.id, (v ->> 'source') || '/' || (v ->> 'check') AS key
        FROM admission_decisions AS d, jsonb_array_elements(d.violations) AS v
        WHERE NOT d.allowed AND d.time >= :since AND d.time < :until AND v ->> 'mode' = 'enforce'
    ) AS per_decision
    GROUP BY key ORDER BY n DESC, key LIMIT :top
    """
)
_DENIED_BY_IMAGE = text(
    """
    SELECT image, count(*) AS n FROM (
        SELECT DISTINCT d.id, image
        FROM admission_decisions AS d, unnest(d.images) AS image
        WHERE NOT d.allowed AND d.time >= :since AND d.time < :until
    ) AS per_decision
    GROUP BY image ORDER BY n DESC, image LIMIT :top
    """
)


@dataclass
class DecisionCounts:
    total: int
    denied: int
    by_check: list[tuple[str, int]]
    by_namespace: list[tuple[str, int]]
    by_image: list[tuple[str, int]]


async def decision_counts(
    session: AsyncSession, *, since: datetime, until: datetime, top: int = 20
) -> DecisionCounts:
    """Totals over decisions with ``since <= time < until`` and the ``top`` largest denial keys."""
    in_range = (DecisionRow.time >= since) & (DecisionRow.time < until)
    total, denied = (
        await session.execute(
            select(func.count(), func.count().filter(DecisionRow.allowed.is_(False))).where(in_range)
        )
    ).one()
    n = func.count().label("n")
    by_namespace = await session.execute(
        select(DecisionRow.namespace, n)
        .where(in_range, DecisionRow.allowed.is_(False), DecisionRow.namespace.is_not(None))
        .group_by(DecisionRow.namespace)
        .order_by(n.desc(), DecisionRow.namespace)
        .limit(top)
    )
    params = {"since": since, "until": until, "top": top}
    by_check = await session.execute(_DENIED_BY_CHECK, params)
    by_image = await session.execute(_DENIED_BY_IMAGE, params)
    return DecisionCounts(
        total=int(total),
        denied=int(denied),
        by_check=[(str(k), int(c)) for k, c in by_check.all()],
        by_namespace=[(str(k), int(c)) for k, c in by_namespace.all()],
        by_image=[(str(k), int(c)) for k, c in by_image.all()],
    )
