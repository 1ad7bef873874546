"""``GET /v1/admission/decisions``: the decision log, newest first, in cursor pages (read scope)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import Page, PageParams, split_page
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_admission.decisions.repository import decision_counts, list_decisions
from qcdr_admission.decisions.schemas import DecisionRead, DecisionStats, KeyCount

router = APIRouter(prefix="/v1/admission", tags=["decisions"])


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(_session)]


@router.get("/decisions", response_model=Page[DecisionRead])
async def get_decisions(
    _: ReadPrincipal,
    session: Session,
    page: PageParams,
    namespace: Annotated[str | None, Query(max_length=253, description="Only this namespace.")] = None,
    allowed: Annotated[bool | None, Query(description="Only allowed (true) or denied (false).")] = None,
    check: Annotated[
        str | None,
        Query(max_length=200, description="Only decisions with a result of this check (any mode)."),
    ] = None,
    kind: Annotated[
        str | None, Query(max_length=100, description="Only this kind (Pod, Deployment, ...).")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Only decisions at or after this time (ISO 8601).")
    ] = None,
) -> Page[DecisionRead]:
    """Stored decisions (dry runs are not stored), newest first; ``next_cursor`` pages on."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = await list_decisions(
        session, page, namespace=namespace, allowed=allowed, check=check, kind=kind, since=since
    )
    items, next_cursor = split_page(rows, page, key=lambda r: (r.time, r.id))
    return Page(items=[DecisionRead.model_validate(r) for r in items], next_cursor=next_cursor)


# ``since`` not given: the whole log (every stored decision is after this)
_EPOCH = datetime.min.replace(tzinfo=UTC)


@router.get("/decisions/stats", response_model=DecisionStats)
async def get_decision_stats(
    _: ReadPrincipal,
    session: Session,
    since: Annotated[
        AwareDatetime | None, Query(description="Decisions at or after this time (ISO 8601; default: all).")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Decisions before this time (ISO 8601; default: now).")
    ] = None,
) -> DecisionStats:
    """How many reviews were answered and denied, and the denials by enforcing check, namespace
    and image (the 20 largest of each, largest first)."""
    try:  # times at the ends of the calendar (year 1, year 9999) overflow on the way to UTC
        start = (since or _EPOCH).astimezone(UTC)
        end = (until or datetime.now(UTC)).astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "since or until is out of range", reason="invalid_time_range") from None
    if start >= end:
        raise ApiError(422, "since must be before until", reason="invalid_time_range")
    counts = await decision_counts(session, since=start, until=end)
    return DecisionStats(
        total=counts.total,
        denied=counts.denied,
        by_check=[KeyCount(key=k, count=n) for k, n in counts.by_check],
        by_namespace=[KeyCount(key=k, count=n) for k, n in counts.by_namespace],
        by_image=[KeyCount(key=k, count=n) for k, n in counts.by_image],
    )
