"""``GET /v1/forwarded-findings``: the findings spokes' analysis made, as the hub received them
(read scope), newest first, by cluster, severity, kind and category; also what the console's
Clusters page shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.api.pagination import PageParams, PageRequest, keyset, split_page
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN
from qcdr_common.contracts.findings.v1 import FindingKind
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.deps import Session
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.forwarding.models import ForwardedFindingRow

router = APIRouter(prefix="/v1/forwarded-findings", tags=["clusters"])

_TABLE = ForwardedFindingRow.__table__.c
_EVENT_TIME = _TABLE.event_time
# unique across spokes: two spokes may well produce the same finding id
_ROW_KEY = _TABLE.cluster_id + "/" + _TABLE.id


class ForwardedFinding(BaseModel):
    cluster: str = Field(description="The spoke's name on the hub.")
    received_at: datetime
    finding: dict[str, Any] = Field(description="The finding as the spoke's analysis stored it.")


class ForwardedFindingList(BaseModel):
    items: list[ForwardedFinding]
    next_cursor: str | None = None


def _query(
    cluster: str | None, severity: Severity | None, kind: FindingKind | None, category: str | None
) -> Select[Any]:
    stmt: Select[Any] = select(ForwardedFindingRow, ClusterRow.name, _ROW_KEY.label("row_key")).join(
        ClusterRow, ClusterRow.id == ForwardedFindingRow.cluster_id
    )
    if cluster:
        stmt = stmt.where(ClusterRow.name == cluster)
    if severity:
        stmt = stmt.where(ForwardedFindingRow.severity == severity.value)
    if kind:
        stmt = stmt.where(ForwardedFindingRow.kind == kind.value)
    if category:
        stmt = stmt.where(ForwardedFindingRow.category == category)
    return stmt


async def forwarded_findings(
    session: AsyncSession,
    page: PageRequest,
    *,
    cluster: str | None = None,
    severity: Severity | None = None,
    kind: FindingKind | None = None,
    category: str | None = None,
) -> ForwardedFindingList:
    stmt = keyset(_query(cluster, severity, kind, category), page, _EVENT_TIME, _ROW_KEY)
    rows = (await session.execute(stmt)).all()
    items, next_cursor = split_page(rows, page, key=lambda r: (r[0].event_time, r.row_key))
    return ForwardedFindingList(
        items=[
            ForwardedFinding(cluster=name, received_at=row.received_at, finding=row.payload)
            for row, name, _ in items
        ],
        next_cursor=next_cursor,
    )


@router.get("", response_model=ForwardedFindingList, summary="Findings forwarded by spokes")
async def list_forwarded_findings(
    _: ReadPrincipal,
    session: Session,
    page: PageParams,
    cluster: Annotated[str | None, Query(pattern=CLUSTER_NAME_PATTERN, max_length=63)] = None,
    severity: Severity | None = None,
    kind: FindingKind | None = None,
    category: Annotated[str | None, Query(max_length=200)] = None,
) -> ForwardedFindingList:
    """Newest first (event time), ``next_cursor`` for the next page; an unknown cluster name lists
    nothing."""
    return await forwarded_findings(
        session, page, cluster=cluster, severity=severity, kind=kind, category=category
    )
