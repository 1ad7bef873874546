"""One error body for every service: RFC 9457 problem details plus a machine-readable ``reason``.

Every 4xx/5xx a service answers looks like::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "query.limit: Input should be less than or equal to 1000",
     "reason": "validation_error",
     "errors": [{"loc": ["query", "limit"], "msg": "...", "type": "less_than_equal"}]}

served as ``application/problem+json``. SOAR playbooks branch on ``reason`` (stable snake_case
codes); ``detail`` is for people. Request validation errors are 422 with one entry per field, and
errors a caller can cause (a value the database rejects or that cannot be encoded for it, a
unique-key conflict) map to 4xx, so a 500 always means a bug here: it is logged with its traceback
and answered without internals.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from qcdr_common.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"

log = get_logger("qcdr.api")

# Stable codes for the statuses Starlette/FastAPI raise on their own (routing, body parsing).
_REASON_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "content_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class FieldError(BaseModel):
    """One rejected input: where (``["query", "limit"]``), why, and pydantic's error type."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details (the schema the OpenAPI documents for every error response)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    reason: str
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """Raise from a route or dependency to answer with a problem body (``reason`` is the stable code)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        reason: str,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[FieldError] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None
        self.extra = dict(extra or {})


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str,
    *,
    reason: str,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The response for a problem; also used by the auth middleware, which runs outside the handlers."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def api_error_response(exc: ApiError) -> JSONResponse:
    return problem_response(
        exc.status, exc.detail, reason=exc.reason, headers=exc.headers, errors=exc.errors, extra=exc.extra
    )


def _loc(parts: Sequence[Any]) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in parts]


def _format_loc(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc) or "request"


def field_errors(raw: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    # ``input`` and ``ctx`` are left out on purpose: the input may be a secret or megabytes long.
    return [
        FieldError(loc=_loc(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", "")))
        for e in raw
    ]


def _summary(errors: Sequence[FieldError]) -> str:
    if not errors:
        return "request validation failed"
    if errors[0].type == "json_invalid":  # FastAPI's loc is ("body", character offset)
        at = errors[0].loc[1] if len(errors[0].loc) > 1 else None
        return "the request body is not valid JSON" + (f" (at character {at})" if isinstance(at, int) else "")
    first = f"{_format_loc(errors[0].loc)}: {errors[0].msg}"
    more = len(errors) - 1
    return first if more == 0 else f"{first} (and {more} more)"


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code < 200 or exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    reason = _REASON_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    return problem_response(exc.status_code, detail, reason=reason, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return problem_response(422, _summary(errors), reason="validation_error", errors=errors)


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    state = _sqlstate(exc)
    # The database's message may quote the data the caller sent: logged by class, never echoed.
    if state.startswith("22") or isinstance(exc, DataError):
        # SQLSTATE class 22, "data exception": a value PostgreSQL refuses (NUL in text, out of range).
        log.warning("api_data_error", path=request.url.path, sqlstate=state)
        return problem_response(422, "a value in the request was not acceptable", reason="invalid_value")
    if state.startswith("23") or isinstance(exc, IntegrityError):
        # Class 23, "integrity constraint violation": e.g. a name that already exists.
        log.info("api_conflict", path=request.url.path, sqlstate=state)
        return problem_response(409, "the request conflicts with existing data", reason="conflict")
    return await _unexpected(request, exc)


# What a JSON body can carry but orjson (JSON/JSONB columns) cannot encode into a statement's
# parameters: integers past 64 bits and lone surrogates.
_UNENCODABLE = ("Integer exceeds 64-bit range", "surrogates not allowed")


async def _statement_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StatementError)
    cause = exc.orig
    if isinstance(cause, TypeError) and any(text in str(cause) for text in _UNENCODABLE):
        # The statement never reached the database; the last defence behind the models' bounds.
        log.warning("api_data_error", path=request.url.path, error=type(cause).__name__)
        return problem_response(422, "a value in the request was not acceptable", reason="invalid_value")
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The JSON log renderer does not format exc_info, so the traceback goes in as text.
    trace = "".join(traceback.format_exception(exc))[-4000:]
    log.error("api_internal_error", path=request.url.path, method=request.method, traceback=trace)
    return problem_response(500, "internal server error", reason="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with a problem body (see the module docstring)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)  # a StatementError, handled first
    app.add_exception_handler(StatementError, _statement_error)
    app.add_exception_handler(Exception, _unexpected)
