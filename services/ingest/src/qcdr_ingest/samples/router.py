"""``POST /v1/metrics/{source}``: workload resource samples, published on ``ingest:samples``.

Sources: ``json`` (our own shape) and ``prometheus`` (remote-write fields as JSON); see
:mod:`qcdr_ingest.samples.adapters` and ``docs/SAMPLES.md`` for the shapes and the mapping.
Answers (problem bodies carry a stable ``reason``):

* 202 :class:`SamplesResult`: the valid samples are queued for publication; ignored ones are
  counted, rejected ones listed by index with a reason;
* 400 ``invalid_json`` (not JSON) or ``empty_batch`` (no samples); 404 ``unknown_source`` with
  ``known_sources``; 413 ``content_too_large`` (bytes) or ``too_many_items`` (more than
  50,000 samples); 415 ``unsupported_media_type``; 422 ``invalid_body`` (JSON of the wrong shape),
  ``no_valid_items`` (every sample rejected, with ``rejections``) or ``validation_error`` (a NUL
  character in ``cluster``); 429 ``rate_limited`` with ``Retry-After``. A refused batch publishes
  nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from qcdr_common.api.auth import WritePrincipal
from qcdr_common.api.body import read_limited_body
from qcdr_common.api.errors import ApiError, Problem
from qcdr_common.registry import Registry

from qcdr_ingest.deps import RateLimiterDep, RelayDep, SessionDep, SettingsDep
from qcdr_ingest.events.registry import unknown_source
from qcdr_ingest.events.service import NUL_REASON
from qcdr_ingest.samples import metrics, service
from qcdr_ingest.samples.registry import Converted, Horizon, SampleAdapter, ShapeError
from qcdr_ingest.samples.schemas import (
    JSON_BODY_SCHEMA,
    MAX_SAMPLES_PER_REQUEST,
    PROMETHEUS_BODY_SCHEMA,
    SampleRejection,
    SamplesResult,
)

router = APIRouter(tags=["samples"])

_REQUEST_BODY = {
    "required": True,
    "description": "source json: {samples: [...]}; source prometheus: {timeseries: [...]}.",
    "content": {"application/json": {"schema": {"oneOf": [JSON_BODY_SCHEMA, PROMETHEUS_BODY_SCHEMA]}}},
}
_DESCRIPTION = f"""
Workload resource samples (CPU, memory, network, syscall and connection rates) for analysis's
time-series detectors, published on `ingest:samples` as `ingest.samples_received` envelopes
(payload `WorkloadSamples` v1, at most 1,000 samples each). Samples are not stored.

**`json`**: `{{"samples": [{{"time": "2026-05-01T12:00:00Z", "workload": {{"namespace": "shop",
"owner_kind": "Deployment", "owner_name": "cart", "pod": "cart-7d9f-x2", "container": "app",
"image_digest": "sha256:…"}}, "values": {{"cpu_cores": 0.2, "memory_bytes": 73400320}}}}]}}`.
`time` is RFC 3339 with a zone; `workload` has the fields of an event's workload; `values` maps
snake_case metric names that carry their unit (`cpu_cores`, `memory_bytes`,
`syscalls_per_second`, `network_rx_bytes_per_second`, `network_tx_bytes_per_second`,
`connections_per_second`, or any `[a-z][a-z0-9_]{{0,63}}`) to finite numbers ≥ 0.

**`prometheus`**: the remote-write request's fields as JSON, `{{"timeseries": [{{"labels": [{{"name":
"__name__", "value": "container_memory_working_set_bytes"}}, {{"name": "namespace", "value": "shop"}},
...], "samples": [{{"value": 73400320, "timestamp": 1777636800000}}]}}]}}`. Mapped: our own names as
they are; `container_memory_working_set_bytes` → `memory_bytes`; the counters
`container_cpu_usage_seconds_total` → `cpu_cores` and `container_network_{{receive,transmit}}_bytes_total`
→ `network_{{rx,tx}}_bytes_per_second` as rates between consecutive samples of one request (the first
sample of a series is ignored); recording rules `level:<counter>:…rate…` as already-rated. Workload
from the labels `cluster`, `namespace`, `pod`, `container`, `image`, `image_digest`/`image_id`,
`owner_kind`/`owner_name` or `workload_type`/`workload`. Other series are counted as ignored.

Valid samples are published even when others are rejected (listed by index, with the reason:
a time more than `QCDR_EVENTS_MAX_FUTURE_S` (300 s) ahead of the server's clock, a NUL character
in a workload, ...).
At most {MAX_SAMPLES_PER_REQUEST:,} samples per request. `cluster` fills a workload that names none.
"""


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


def _adapters(request: Request) -> Registry[SampleAdapter]:
    adapters: Registry[SampleAdapter] = request.app.state.sample_adapters
    return adapters


def _check_media_type(request: Request) -> None:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media and media != "application/json":
        raise ApiError(
            415,
            f"Content-Type {media[:80]!r} is not supported; send application/json "
            "(remote-write protobuf is not accepted: send its fields as JSON)",
            reason="unsupported_media_type",
        )


def _refused(source: str, error: ApiError) -> ApiError:
    metrics.BATCHES_REFUSED.labels(source=source, status=str(error.status)).inc()
    return error


def _listed(converted: Converted, limit: int) -> list[SampleRejection]:
    return [
        SampleRejection(index=r.index, sample=r.sample, reason=r.reason) for r in converted.rejected[:limit]
    ]


@router.post(
    "/v1/metrics/{source}",
    status_code=202,
    response_model=SamplesResult,
    summary="Send workload resource samples (our JSON, or Prometheus remote-write as JSON)",
    description=_DESCRIPTION,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        400: _problem("Body not JSON, or no samples in it"),
        404: _problem("Unknown source (the body lists the known ones)"),
        413: _problem("Body larger than the byte limit, or more samples than the count limit"),
        415: _problem("Content-Type is not JSON"),
        422: _problem(
            "JSON of the wrong shape, every sample rejected (with the reasons), or a NUL in cluster"
        ),
        429: _problem("Rate limit for this token and source; see Retry-After"),
    },
)
async def post_samples(
    source: Annotated[str, Path(max_length=40, description="json or prometheus.")],
    request: Request,
    principal: WritePrincipal,
    session: SessionDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    relay: RelayDep,
    cluster: Annotated[
        str | None,
        Query(max_length=200, description="Cluster of samples that name none (default: this one)."),
    ] = None,
) -> SamplesResult:
    """Queue the valid samples of a batch for ``ingest:samples``; see the module docstring."""
    adapters = _adapters(request)
    if source not in adapters:
        raise _refused("unknown", unknown_source(source, adapters.names()))
    adapter = adapters.get(source)
    # the events' buckets, under a key of its own: samples and events of one token do not compete
    key = (principal.name, f"metrics/{source}")
    try:
        if cluster is not None and "\x00" in cluster:
            # it would be the cluster of every sample naming none, and analysis cannot store it
            raise ApiError(422, f"query.cluster: {NUL_REASON}", reason="validation_error")
        _check_media_type(request)
        wait = limiter.wait_for(key)
        if wait is None:
            body = await read_limited_body(request, settings.events_max_bytes)
            data = service.decode(body)
            received = adapter.size(data)
            if received == 0:
                raise ApiError(400, "the body carries no samples", reason="empty_batch")
            if received > MAX_SAMPLES_PER_REQUEST:
                detail = f"{received} samples in one request; at most {MAX_SAMPLES_PER_REQUEST} are accepted"
                raise ApiError(413, detail, reason="too_many_items")
            # capped at the bucket size: a batch within the count limit must pass once it is full
            wait = limiter.take(key, min(received, limiter.burst))
        if wait is not None:
            raise ApiError(
                429,
                f"too many samples from this token for {source!r}; retry in {wait} s",
                reason="rate_limited",
                headers={"Retry-After": str(wait)},
            )
    except service.BodyError as exc:
        raise _refused(source, ApiError(400, exc.reason, reason="invalid_json")) from None
    except ShapeError as exc:
        raise _refused(source, ApiError(422, exc.reason, reason="invalid_body")) from None
    except ApiError as exc:
        raise _refused(source, exc) from None

    horizon = Horizon(datetime.now(UTC), timedelta(seconds=settings.events_max_future_s))
    converted = adapter.convert(data, cluster or settings.cluster_id, horizon)
    listed = _listed(converted, settings.events_rejections_listed)
    rejected = converted.rejected_count
    if not converted.samples and not converted.ignored:
        raise _refused(
            source,
            ApiError(
                422,
                f"none of the {received} samples could be used; see rejections",
                reason="no_valid_items",
                extra={"rejections": [r.model_dump() for r in listed], "rejected": rejected},
            ),
        )
    queued = service.envelopes(
        source, converted.samples, service=settings.service_name, default_cluster=settings.cluster_id
    )
    if queued:
        await service.queue(session, queued)
        await session.commit()
        if relay is not None:
            relay.notify()
    for outcome, count in (
        ("accepted", converted.accepted),
        ("rejected", rejected),
        ("ignored", converted.ignored),
    ):
        metrics.SAMPLES.labels(source=source, outcome=outcome).inc(count)
    return SamplesResult(
        source=source,
        received=received,
        accepted=converted.accepted,
        ignored=converted.ignored,
        rejected=listed,
        rejected_total=rejected,
        published=len(converted.samples),
        envelopes=len(queued),
    )
