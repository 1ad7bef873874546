"""``/v1/findings``: findings for SOAR tools (read scope), newest event first, cursor pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import PageParams, keyset, split_page
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import FindingKind

from qcdr_analysis.deps import Session
from qcdr_analysis.findings import repository as repo
from qcdr_analysis.findings.models import FindingRow
from qcdr_analysis.findings.schemas import FindingList, FindingRead

router = APIRouter(prefix="/v1/findings", tags=["findings"])

_MAX_VALUES = 50


def _read(row: FindingRow) -> FindingRead:
    return FindingRead.model_validate({**row.payload, "created_at": row.created_at})


@router.get("", response_model=FindingList, summary="List findings")
async def list_findings(
    _: ReadPrincipal,
    page: PageParams,
    session: Session,
    since: Annotated[AwareDatetime | None, Query(description="Event time at or after (ISO 8601).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Event time before (ISO 8601).")] = None,
    severity: Annotated[
        list[Severity], Query(max_length=_MAX_VALUES, description="Exactly these severities (repeatable).")
    ] = [],  # noqa: B006  # FastAPI copies defaults per request
    min_severity: Annotated[Severity | None, Query(description="This severity or higher.")] = None,
    category: Annotated[list[str], Query(max_length=_MAX_VALUES, description="Categories.")] = [],  # noqa: B006
    kind: Annotated[list[FindingKind], Query(max_length=_MAX_VALUES, description="Kinds.")] = [],  # noqa: B006
    namespace: Annotated[list[str], Query(max_length=_MAX_VALUES, description="Namespaces.")] = [],  # noqa: B006
    cluster: Annotated[list[str], Query(max_length=_MAX_VALUES, description="Clusters.")] = [],  # noqa: B006
    detector: Annotated[list[str], Query(max_length=_MAX_VALUES, description="Detectors.")] = [],  # noqa: B006
    technique: Annotated[
        str | None, Query(pattern=r"^T\d{4}(\.\d{3})?$", description="An ATT&CK technique id.")
    ] = None,
) -> FindingList:
    """Findings matching every filter given (repeated values of one filter are alternatives),
    newest event first. Pass ``next_cursor`` back as ``cursor`` for the next page."""
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "since must be before until", reason="invalid_time_range")
    filters = repo.FindingFilters(
        since=since,
        until=until,
        severity=tuple(severity),
        min_severity=min_severity,
        category=tuple(category),
        kind=tuple(k.value for k in kind),
        namespace=tuple(namespace),
        cluster=tuple(cluster),
        detector=tuple(detector),
        technique=technique,
    )
    stmt = keyset(repo.select_findings(filters), page, repo.EVENT_TIME, repo.ID)
    rows = (await session.scalars(stmt)).all()
    items, next_cursor = split_page(rows, page, key=lambda row: (row.event_time, row.id))
    return FindingList(items=[_read(row) for row in items], next_cursor=next_cursor)


@router.get("/{finding_id}", response_model=FindingRead, summary="Get one finding")
async def get_finding(
    _: ReadPrincipal,
    session: Session,
    finding_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> FindingRead:
    row = await repo.get_finding(session, finding_id)
    if row is None:
        raise ApiError(404, f"no finding {finding_id!r}", reason="finding_not_found")
    return _read(row)
