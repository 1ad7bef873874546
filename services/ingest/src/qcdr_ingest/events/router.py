"""``POST /v1/events/{source}``, ``GET /v1/events``, ``GET /v1/events/{event_id}``, ``GET /v1/sources``.

Answers to a batch (problem bodies carry a stable ``reason``):

* 202 :class:`IngestResult`: the valid items are stored (once: a known id counts as a duplicate),
  the rejected ones are listed by index with a reason, and valid items that are not events for
  the source (Hubble flows in the middle of a connection) are counted as ``ignored``;
* 404 ``unknown_source`` with ``known_sources``; 415 ``unsupported_media_type``;
* 413 ``content_too_large`` (bytes) or ``too_many_items`` (count); 429 ``rate_limited`` with
  ``Retry-After``; 422 ``invalid_body`` (not JSON, wrong shape) or ``no_valid_items`` (every item
  rejected, none ignored, with ``rejections``). A refused batch stores nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from qcdr_common.api.auth import WritePrincipal, require_scope
from qcdr_common.api.body import read_limited_body
from qcdr_common.api.errors import ApiError, Problem
from qcdr_common.api.pagination import Page, PageParams, split_page
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.logging import get_logger

from qcdr_ingest.deps import AdaptersDep, RateLimiterDep, RelayDep, SessionDep, SettingsDep
from qcdr_ingest.events import metrics, repository, service
from qcdr_ingest.events.registry import unknown_source
from qcdr_ingest.events.schemas import EventRead, IngestResult, Rejection, SourceInfo

log = get_logger(__name__)
router = APIRouter(tags=["events"])

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
_REQUEST_BODY = {
    "required": True,
    "description": "A JSON array of items (or one item), or NDJSON (one item per line).",
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


_BATCH_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _problem("Body larger than the byte limit, or more items than the count limit"),
    415: _problem("Content-Type is neither JSON nor NDJSON"),
    422: _problem("Body not JSON, wrong shape, or every item rejected (with the reasons)"),
    429: _problem("Rate limit for this token and source; see Retry-After"),
}


def _format(request: Request) -> service.BodyFormat | None:
    """The body format the Content-Type names; None when there is none (the body decides)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media in JSON_TYPES:
        return service.BodyFormat.JSON
    if media in NDJSON_TYPES:
        return service.BodyFormat.NDJSON
    if not media:
        return None
    raise ApiError(
        415,
        f"Content-Type {media[:80]!r} is not supported; send application/json or application/x-ndjson",
        reason="unsupported_media_type",
    )


def _refused(source: str, error: ApiError) -> ApiError:
    metrics.BATCHES_REFUSED.labels(source=source, status=str(error.status)).inc()
    return error


@router.post(
    "/v1/events/{source}",
    status_code=202,
    response_model=IngestResult,
    summary="Send a batch of events from one source",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={404: _problem("Unknown source (the body lists the known ones)"), **_BATCH_ERRORS},
)
async def post_events(
    source: Annotated[str, Path(max_length=40, description="An adapter: see GET /v1/sources.")],
    request: Request,
    principal: WritePrincipal,
    session: SessionDep,
    settings: SettingsDep,
    adapters: AdaptersDep,
    limiter: RateLimiterDep,
    relay: RelayDep,
    cluster: Annotated[
        str | None, Query(max_length=200, description="Cluster of events that name none (default: this one).")
    ] = None,
) -> IngestResult:
    """Store a batch of events from ``source`` and publish each new one on ``ingest:events``.

    The body is a JSON array of items (or a single item) with ``Content-Type: application/json``,
    or NDJSON (``application/x-ndjson``), one item per line. **Valid items are kept even when
    others are rejected**: the answer (202) counts what was stored, what was already known (an
    event id is an idempotency key, so re-sending a batch is harmless) and lists each rejected
    item by index with the reason. A batch is refused whole only when nothing in it is usable.
    """
    if source not in adapters:
        raise _refused("unknown", unknown_source(source, adapters.names()))
    adapter = adapters.get(source)
    try:
        fmt = _format(request)
    except ApiError as exc:
        raise _refused(source, exc) from None
    key = (principal.name, source)
    wait = limiter.wait_for(key)
    if wait is None:
        try:
            body = await read_limited_body(request, settings.events_max_bytes)
        except ApiError as exc:
            raise _refused(source, exc) from None
        if fmt is None:
            fmt = service.BodyFormat.JSON if body[:64].lstrip()[:1] == b"[" else service.BodyFormat.NDJSON
        try:
            batch = service.decode(body, fmt)
        except service.BodyError as exc:
            raise _refused(source, ApiError(422, exc.reason, reason="invalid_body")) from None
        if batch.size > settings.events_max_items:
            detail = f"{batch.size} items in one request; at most {settings.events_max_items} are accepted"
            raise _refused(source, ApiError(413, detail, reason="too_many_items"))
        wait = limiter.take(key, batch.size)
    if wait is not None:
        raise _refused(
            source,
            ApiError(
                429,
                f"too many events from this token for {source!r}; retry in {wait} s",
                reason="rate_limited",
                headers={"Retry-After": str(wait)},
            ),
        )
    metrics.ITEMS_RECEIVED.labels(source=source).inc(batch.size)
    converted, prepared = service.prepare(
        adapter,
        batch,
        cluster or settings.cluster_id,
        default_cluster=settings.cluster_id,
        max_future=timedelta(seconds=settings.events_max_future_s),
    )
    shown = converted.rejected[: settings.events_rejections_listed]
    listed = [Rejection(index=r.index, line=r.line, reason=r.reason) for r in shown]
    if batch.size and not converted.events and not converted.ignored:
        raise _refused(
            source,
            ApiError(
                422,
                f"none of the {batch.size} items could become an event; see rejections",
                reason="no_valid_items",
                extra={"rejections": [r.model_dump() for r in listed], "rejected": len(converted.rejected)},
            ),
        )
    try:
        stored = await repository.insert_events(
            session,
            prepared.rows,
            service=settings.service_name,
            reputation_fresh_s=request.app.state.reputation_fresh_s,
        )
        await session.commit()
    except asyncpg.PostgresError as exc:
        await session.rollback()
        if not str(getattr(exc, "sqlstate", "")).startswith("22"):
            raise
        # a value PostgreSQL refuses that the checks above did not foresee: the batch is refused
        # (nothing stored) and the cause logged by class, never echoed
        log.warning("events_data_error", source=source, sqlstate=exc.sqlstate, error=type(exc).__name__)
        raise _refused(
            source,
            ApiError(422, "a value in the batch was not acceptable to the database", reason="invalid_value"),
        ) from None
    if relay is not None and stored:
        relay.notify()
    accepted = len(converted.events) + converted.repeated
    metrics.count_outcomes(
        source,
        stored=stored,
        duplicates=accepted - stored,
        rejected=len(converted.rejected),
        ignored=converted.ignored,
    )
    return IngestResult(
        source=source,
        received=batch.size,
        accepted=accepted,
        stored=stored,
        duplicates=accepted - stored,
        rejected=len(converted.rejected),
        ignored=converted.ignored,
        rejections=listed,
    )


@router.post(
    "/v1/dns",
    status_code=202,
    response_model=IngestResult,
    summary="Send a batch of DNS queries (the same as POST /v1/events/dns)",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=_BATCH_ERRORS,
)
async def post_dns_queries(
    request: Request,
    principal: WritePrincipal,
    session: SessionDep,
    settings: SettingsDep,
    adapters: AdaptersDep,
    limiter: RateLimiterDep,
    relay: RelayDep,
    cluster: Annotated[
        str | None,
        Query(max_length=200, description="Cluster of queries that name none (default: this one)."),
    ] = None,
) -> IngestResult:
    """DNS queries in batches, as the ``dns`` source (docs/DNS.md has the item shape): the same
    limits, idempotency, rejections and rate-limit bucket as ``POST /v1/events/dns``."""
    return await post_events("dns", request, principal, session, settings, adapters, limiter, relay, cluster)


@router.get(
    "/v1/sources",
    response_model=list[SourceInfo],
    summary="The event sources POST /v1/events/{source} accepts",
    dependencies=[Depends(require_scope("read"))],
)
async def list_sources(adapters: AdaptersDep) -> list[SourceInfo]:
    return [SourceInfo(name=a.name, summary=a.summary) for a in sorted(adapters, key=lambda a: a.name)]


def _event_json(stored: repository.StoredEvent) -> bytes:
    # The stored payload is a validated SecurityEvent: splice received_at in rather than parse
    # and re-validate every event of a page.
    return b"".join(
        (stored.payload.encode()[:-1], b',"received_at":', orjson.dumps(stored.received_at), b"}")
    )


@router.get(
    "/v1/events",
    response_model=Page[EventRead],
    summary="Stored events, newest first",
    dependencies=[Depends(require_scope("read"))],
)
async def list_events(
    session: SessionDep,
    page: PageParams,
    since: Annotated[datetime | None, Query(description="Event time ≥ this (ISO 8601 with zone).")] = None,
    until: Annotated[datetime | None, Query(description="Event time < this.")] = None,
    severity: Annotated[list[Severity] | None, Query(description="Any of these severities.")] = None,
    min_severity: Annotated[Severity | None, Query(description="At least this severity.")] = None,
    category: Annotated[list[str] | None, Query()] = None,
    namespace: Annotated[list[str] | None, Query()] = None,
    cluster: Annotated[list[str] | None, Query()] = None,
    source: Annotated[list[str] | None, Query()] = None,
) -> Response:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.utcoffset() is None:
            raise ApiError(422, f"query.{name}: needs a time zone (e.g. Z)", reason="validation_error")
    severities = set(severity or Severity)
    if min_severity is not None:
        severities = {s for s in severities if s.rank >= min_severity.rank}
    filters = repository.EventFilter(
        since=since,
        until=until,
        severities=tuple(sorted(s.value for s in severities)) if severity or min_severity else (),
        categories=tuple(category or ()),
        namespaces=tuple(namespace or ()),
        clusters=tuple(cluster or ()),
        sources=tuple(source or ()),
    )
    if (severity or min_severity) and not severities:
        items: list[repository.StoredEvent] = []
        next_cursor = None
    else:
        rows = await repository.list_events(session, filters, page)
        items, next_cursor = split_page(rows, page, key=lambda r: (r.event_time, r.id))
    body = b'{"items":[' + b",".join(_event_json(item) for item in items) + b'],"next_cursor":'
    return Response(body + orjson.dumps(next_cursor) + b"}", media_type="application/json")


@router.get(
    "/v1/events/{event_id}",
    response_model=EventRead,
    summary="One stored event",
    dependencies=[Depends(require_scope("read"))],
    responses={404: _problem("No event with this id")},
)
async def get_event(event_id: Annotated[str, Path(max_length=200)], session: SessionDep) -> Response:
    stored = await repository.get_event(session, event_id)
    if stored is None:
        raise ApiError(404, "no event with this id", reason="not_found")
    return Response(_event_json(stored), media_type="application/json")
