"""Shared HTTP handling for sinks: one client per sink, status classification, ``Retry-After``,
and timeouts told apart (not sent vs. sent without an answer)."""

from __future__ import annotations

import logging
import re
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from qcdr_common.secret_text import describe_http_error
from qcdr_common.tls_files import ca_context

from qcdr_response.outputs.base import MAX_AGE_LIMIT_S, Outcome, Status

# 401/403 are retried too (until max age): a rotated or mistyped token is fixed by an operator, and
# the alerts queued meanwhile must still arrive afterwards.
# httpx (and httpcore) log every request's full URL at INFO, and sink URLs carry secrets (Slack
# and Teams webhook paths, tokens in queries): those loggers only speak up for warnings.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

RETRY_STATUSES = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})
# RFC 9110 delta-seconds: ASCII digits only ("²".isdigit() is true, and float("²") raises)
_DELTA_SECONDS = re.compile(r"[0-9]+")
# Beyond any max age (the worker dead-letters what it cannot retry in time); finite for arithmetic.
RETRY_AFTER_LIMIT_S = 10 * MAX_AGE_LIMIT_S


def make_client(timeout_s: float, *, verify: bool | str | Path | ssl.SSLContext = True) -> httpx.AsyncClient:
    """``verify``: True (system CAs), False, a CA bundle path, or an SSLContext."""
    if isinstance(verify, str | Path):  # httpx deprecates a path here: make the context ourselves
        verify = ca_context(verify)
    # trust_env=False: proxies and netrc from the environment must not redirect alerts
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=False, verify=verify)


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any, at most
    ``RETRY_AFTER_LIMIT_S``."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), RETRY_AFTER_LIMIT_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), RETRY_AFTER_LIMIT_S)


def classify(response: httpx.Response) -> Outcome:
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(Status.DELIVERED, str(code))
    detail = f"HTTP {code}: {response.text[:300]}"
    if code in RETRY_STATUSES:
        return Outcome(Status.RETRY, detail, retry_after(response))
    return Outcome(Status.REJECTED, detail)


def failure(exc: httpx.HTTPError) -> Outcome:
    """A transport error: nothing sent (connect errors, pool timeouts) → retry; sent but no answer
    (read/write timeouts, a dropped connection after sending) → unknown."""
    detail = describe_http_error(exc)  # never a refused header's value
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Outcome(Status.RETRY, detail)
    return Outcome(Status.UNKNOWN, detail)


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook URLs carry their secret in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{host}{port}", "/***" if parts.path not in ("", "/") else "", "", ""))
