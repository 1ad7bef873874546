"""``/v1/findings``: findings for SOAR tools (read scope), newest event first, cursor pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
from qcdr_analysis.findings.schemas import (
    CategoryCount,
    FindingList,
    FindingRead,
    FindingStats,
    ImageCount,
    NamespaceCount,
    SeriesBucket,
    StatsBucket,
)

router = APIRouter(prefix="/v1/findings", tags=["findings"])

_MAX_VALUES = 50
SERIES_CATEGORIES = 5
OTHER = "other"
MAX_BUCKETS = 500
_BUCKET_STEP = {StatsBucket.HOUR: timedelta(hours=1), StatsBucket.DAY: timedelta(days=1)}
# the window when ``since`` is not given: a day of hours, or a month of days
_DEFAULT_SPAN = {StatsBucket.HOUR: timedelta(hours=24), StatsBucket.DAY: timedelta(days=30)}


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


def bucket_starts(since: datetime, until: datetime, bucket: StatsBucket) -> list[datetime]:
    """The starts (UTC) of the buckets covering ``[since, until)``, the first truncated to the
    bucket size as ``date_trunc`` does; stops counting past ``MAX_BUCKETS``."""
    since = since.astimezone(UTC)
    start = since.replace(minute=0, second=0, microsecond=0)
    if bucket is StatsBucket.DAY:
        start = start.replace(hour=0)
    step = _BUCKET_STEP[bucket]
    starts: list[datetime] = []
    while start < until and len(starts) <= MAX_BUCKETS:
        starts.append(start)
        start += step
    return starts


# declared before /{finding_id}, which would take "stats" for an id
@router.get("/stats", response_model=FindingStats, summary="Finding counts for dashboards")
async def finding_stats(
    _: ReadPrincipal,
    session: Session,
    since: Annotated[
        AwareDatetime | None,
        Query(
            description="Event time at or after (ISO 8601); default: 24 hours (hour) or 30 days (day) ago."
        ),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Event time before (ISO 8601); default: now.")
    ] = None,
    bucket: Annotated[StatsBucket, Query(description="Series bucket size (UTC).")] = StatsBucket.HOUR,
) -> FindingStats:
    """Totals by severity, the largest categories, namespaces and images, and a per-bucket series
    by severity and by category (empty buckets included), over findings by event time. At most 500
    buckets."""
    try:  # times at the ends of the calendar (year 1, year 9999) overflow on the way to UTC
        until = (until or datetime.now(UTC)).astimezone(UTC)
        since = (since or until - _DEFAULT_SPAN[bucket]).astimezone(UTC)
        if since >= until:
            raise ApiError(422, "since must be before until", reason="invalid_time_range")
        starts = bucket_starts(since, until, bucket)
    except OverflowError:
        raise ApiError(422, "since or until is out of range", reason="invalid_time_range") from None
    if len(starts) > MAX_BUCKETS:
        raise ApiError(
            422,
            f"the range spans more than {MAX_BUCKETS} {bucket.value} buckets: narrow it or use bucket=day",
            reason="too_many_buckets",
        )
    counts = await repo.finding_counts(session, since=since, until=until, unit=bucket.value)
    zero = dict.fromkeys(Severity, 0)
    # categories over time: the range's largest few by name, the rest folded into "other", so a
    # chart stays readable whatever the number of rules
    shown = {c for c, _ in counts.by_category[:SERIES_CATEGORIES]}
    series = []
    for start in starts:
        key = start.replace(tzinfo=None)
        found = counts.series.get(key, {})
        categories: dict[str, int] = {}
        for category, n in counts.category_series.get(key, {}).items():
            name = category if category in shown else OTHER
            categories[name] = categories.get(name, 0) + n
        series.append(
            SeriesBucket(
                start=start,
                counts={**zero, **{Severity(k): v for k, v in found.items()}},
                categories=categories,
            )
        )
    return FindingStats(
        since=since,
        until=until,
        bucket=bucket,
        total=counts.total,
        by_severity={**zero, **{Severity(k): v for k, v in counts.by_severity.items()}},
        by_category=[CategoryCount(category=c, count=n) for c, n in counts.by_category],
        series=series,
        top_namespaces=[NamespaceCount(namespace=ns, count=n) for ns, n in counts.by_namespace],
        top_images=[ImageCount(image=i, count=n) for i, n in counts.by_image],
    )


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
