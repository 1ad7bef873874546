"""``POST /validate``: the API server's call, answered from memory.

Decode with orjson, parse (:mod:`.review`), evaluate with the engine in ``app.state.admission_engine``
(swapped as a whole when policies change, so a request sees one engine from start to end), encode
(:mod:`.response`), count, and hand the decision to the decision log (an append; the database write
happens later in a background task). No network call and no await besides reading the body.

It takes no bearer token (the API server authenticates the webhook by its TLS certificate). The
hot path is :class:`WebhookFastPath`, a pure ASGI middleware added outermost: ``POST /validate``
is answered there, before the auth middleware, the Prometheus instrumentator (the webhook has its
own metrics, :mod:`qcdr_admission.metrics`) and routing; everything else passes through. The
Starlette route below answers the same way for any request the middleware does not take.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Sequence
from typing import Any

import orjson
from qcdr_common.logging import get_logger
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from qcdr_admission.decisions.writer import DecisionLog, PendingDecision, images_of
from qcdr_admission.engine import Engine, Result
from qcdr_admission.metrics import (
    ADMISSION_ALLOWED,
    ADMISSION_DENIED,
    ADMISSION_MALFORMED,
    ADMISSION_RESULTS,
    ADMISSION_SECONDS,
    ADMISSION_SKIPPED,
    ADMISSION_TOTAL,
)
from qcdr_admission.pss import MalformedObjectError
from qcdr_admission.webhook.response import allowed_response, review_response
from qcdr_admission.webhook.review import ReviewError, object_error, parse_review

PATH = "/validate"
# The API server sends objects of up to ~1.5 MiB (etcd's limit) twice (object, oldObject) in JSON.
MAX_BODY = 8 * 1024 * 1024
JSON = "application/json"
PROBLEM = "application/problem+json"
_NO_RESULTS: tuple[Result, ...] = ()

log = get_logger("qcdr.admission.webhook")


def _problem(status: int, title: str, detail: str, reason: str) -> bytes:
    return orjson.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "reason": reason}
    )


def _bad(exc: ReviewError) -> tuple[int, bytes, str]:
    ADMISSION_MALFORMED.labels(reason=exc.reason).inc()
    return 400, _problem(400, "Bad Request", exc.detail, exc.reason), PROBLEM


@functools.cache
def _results_counter(source: str, mode: str) -> Any:
    # the labelled child, looked up once: labels() costs more than inc() on every result
    return ADMISSION_RESULTS.labels(source=source, mode=mode)


def _count_results(results: Sequence[Result]) -> None:
    for r in results:
        _results_counter("pss" if r.source == "pss" else "policy", str(r.mode)).inc()


def answer(body: bytes, engine: Engine, decisions: DecisionLog | None) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` for one request body; never raises for any input."""
    started = time.perf_counter()
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _bad(ReviewError("invalid_json", "the body is not JSON (an AdmissionReview)"))
    try:
        review = parse_review(decoded)
    except ReviewError as exc:
        return _bad(exc)
    subject = review.subject
    results: Sequence[Result]
    if subject is None:
        allowed, payload, results = True, allowed_response(review.uid), _NO_RESULTS
        ADMISSION_SKIPPED.labels(why=review.skipped or "unknown").inc()
    else:
        try:
            results = engine.evaluate(subject)
        except MalformedObjectError as exc:
            return _bad(object_error(exc, subject.kind))
        allowed, payload = review_response(review.uid, results)
        if results:
            _count_results(results)
    ADMISSION_TOTAL.inc()
    (ADMISSION_ALLOWED if allowed else ADMISSION_DENIED).inc()
    if decisions is not None and not review.dry_run:
        decisions.record(
            PendingDecision(
                time.time(),
                review.uid,
                review.operation,
                review.kind,
                review.namespace,
                review.name,
                review.user,
                allowed,
                review.skipped,
                results,
                images_of(subject.pod_spec) if subject is not None else [],
            )
        )
    ADMISSION_SECONDS.observe(time.perf_counter() - started)
    return 200, payload, JSON


def _safe_answer(body: bytes, state: Any) -> tuple[int, bytes, str]:
    try:
        return answer(body, state.admission_engine, state.decision_log)
    except Exception as exc:  # a bug: logged with its traceback, answered 500 (fail-open by policy)
        trace = "".join(traceback.format_exception(exc))[-4000:]
        log.error("admission_internal_error", traceback=trace)
        return 500, _problem(500, "Internal Server Error", "internal server error", "internal_error"), PROBLEM


class WebhookFastPath:
    """Answers ``POST /validate`` directly (outermost middleware); passes everything else on."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(scope, receive)
        if body is None:
            status, payload, ctype = (
                413,
                _problem(
                    413, "Content Too Large", f"the body is larger than {MAX_BODY} bytes", "content_too_large"
                ),
                PROBLEM,
            )
        else:
            status, payload, ctype = _safe_answer(body, self.state)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The body, or None as soon as it is known to exceed :data:`MAX_BODY`."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > MAX_BODY:
                return None
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def validate(request: Request) -> Response:
    body = await _read_body(request.scope, request.receive)
    if body is None:
        return Response(
            _problem(413, "Content Too Large", "body too large", "content_too_large"), 413, media_type=PROBLEM
        )
    status, payload, ctype = _safe_answer(body, request.app.state)
    return Response(payload, status, media_type=ctype)


route = Route(PATH, validate, methods=["POST"], name="validate", include_in_schema=False)

__all__ = ["PATH", "WebhookFastPath", "answer", "route", "validate"]
