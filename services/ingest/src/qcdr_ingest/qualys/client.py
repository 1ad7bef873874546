"""Async client for the Qualys CDR findings API.

``GET {gateway}/cdr-api/rest/v1/findings`` with a JWT from ``/auth``. Paging, window splitting and
de-duplication live in :mod:`qcdr_ingest.qualys.paging`; this module does HTTP: parameters,
retries, the one re-login on a 401, and turning odd responses into one-line errors.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from qcdr_ingest.qualys.auth import TokenProvider, TokenTiming
from qcdr_ingest.qualys.authed import authed_get
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.errors import (
    QualysHTTPError,
    QualysPayloadError,
)
from qcdr_ingest.qualys.paging import Page, PageMeta, PagerOptions, WindowPager
from qcdr_ingest.qualys.results import FetchProgress, FetchResult, FetchStats
from qcdr_ingest.qualys.retry import RetryNotice

FINDINGS_PATH = "/cdr-api/rest/v1/findings"
SEVERITY_PARAM = {"LOW": "1", "MEDIUM": "2", "HIGH": "3", "CRITICAL": "4"}
USER_AGENT = "qcdr-ingest/0.1"


def format_start_at(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.000Z``: the first millisecond of the second, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def format_end_at(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.999Z``: the last millisecond of the second, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.999Z")


def severity_param(value: str) -> str:
    """The API's numeric severity: LOW=1 .. CRITICAL=4 (any case); numbers pass through."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return text
    try:
        return SEVERITY_PARAM[text.upper()]
    except KeyError:
        raise ValueError(f"unknown severity {value!r}; use LOW, MEDIUM, HIGH, CRITICAL or a number") from None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def parse_page(response: httpx.Response) -> Page:
    """A :class:`Page` from a findings response; ``QualysPayloadError`` for anything else."""
    if response.status_code == 204 or not response.content.strip():
        return Page([], PageMeta())
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        start = response.text.lstrip()[:60]
        what = "HTML" if start.startswith("<") else f"non-JSON text {start!r}"
        raise QualysPayloadError(f"Qualys findings response is {what}, not JSON") from None
    if isinstance(data, list):
        return Page(data, PageMeta())
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise QualysPayloadError(f"Qualys findings response has no 'content' array (got {keys})")
    meta = PageMeta(
        number=_int(data.get("number")),
        size=_int(data.get("size")),
        total_elements=_int(data.get("totalElements")),
        total_pages=_int(data.get("totalPages")),
        last=_bool(data.get("last")),
        first=_bool(data.get("first")),
    )
    return Page(data["content"], meta)


def _aware(name: str, moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return int(moment.timestamp() // 1)


class QualysCdrClient:
    """Fetches CDR findings; one fetch at a time. Use as ``async with QualysCdrClient(settings) as c``."""

    def __init__(
        self,
        settings: QualysSettings,
        *,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self.base_url = base_url or settings.base_url
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            verify=settings.verify_tls,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._retry = settings.retry_policy
        self._stats = FetchStats()
        self._auth = TokenProvider(
            self._http,
            username=settings.username,
            password=settings.password,
            access_token=settings.access_token,
            timing=TokenTiming(
                margin_s=settings.token_refresh_margin_s,
                fraction=settings.token_refresh_fraction,
                default_lifetime_s=settings.token_default_lifetime_s,
            ),
            retry=self._retry,
            rng=self._rng,
            sleep=sleep,
            on_retry=self._count_retry,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def authenticate(self) -> None:
        """Log in now (or accept the configured token), so bad credentials fail early."""
        await self._auth.get()

    async def fetch_findings(
        self,
        start: datetime,
        end: datetime,
        *,
        severity: str | None = None,
        resource_type: str | None = None,
        progress: Callable[[FetchProgress], None] | None = None,
    ) -> FetchResult:
        """Every finding with a timestamp in ``[start, end]`` (whole seconds, both inclusive)."""
        start_s, end_s = _aware("start", start), _aware("end", end)
        if start_s > end_s:
            raise ValueError("start must not be after end")
        filters: dict[str, str] = {}
        if severity is not None:
            filters["severity"] = severity_param(severity)
        if resource_type:
            filters["resourceType"] = resource_type
        self._stats = stats = FetchStats()
        auth_before = self._auth.auth_requests
        settings = self._settings
        options = PagerOptions(
            limit=settings.page_size,
            page_base=settings.page_base,
            window_cap=settings.window_cap,
            min_window_s=settings.min_window_seconds,
            max_passes=settings.max_window_passes,
            verify_total=settings.verify_total,
        )

        async def fetch(start_s: int, end_s: int, page: int, limit: int) -> Page:
            params = {
                "startAt": format_start_at(datetime.fromtimestamp(start_s, UTC)),
                "endAt": format_end_at(datetime.fromtimestamp(end_s, UTC)),
                "limit": str(limit),
                settings.page_param: str(page),
                settings.size_param: str(limit),
                **filters,
            }
            return parse_page(await self._get(FINDINGS_PATH, params))

        async def verify(start_s: int, end_s: int) -> int | None:
            return (await fetch(start_s, end_s, settings.page_base, 1)).meta.total_elements

        pager = WindowPager(fetch, options, stats, progress=progress)
        await pager.run(start_s, end_s, verify=verify)
        stats.auth_requests = self._auth.auth_requests - auth_before
        return FetchResult(
            start=datetime.fromtimestamp(start_s, UTC),
            end=datetime.fromtimestamp(end_s, UTC).replace(microsecond=999_000),
            findings=pager.collector.sorted_findings(),
            unidentified=list(pager.collector.unidentified.values()),
            fetched=len(pager.collector),
            reported_total=pager.reported_total,
            pages=stats.pages,
            requests=stats.requests + stats.auth_requests,
            auth_requests=stats.auth_requests,
            window_splits=stats.window_splits,
            windows=len(pager.final),
            duplicates_dropped=stats.duplicates_dropped,
            retries=stats.retries,
            truncated_windows=list(pager.truncated),
            warnings=list(pager.warnings),
        )

    def _count_retry(self, notice: RetryNotice) -> None:
        self._stats.retries += 1

    def _count_request(self) -> None:
        self._stats.requests += 1

    async def _get(self, path: str, params: dict[str, str]) -> httpx.Response:
        response = await authed_get(
            self._http,
            self._auth,
            path,
            params,
            policy=self._retry,
            rng=self._rng,
            sleep=self._sleep,
            on_retry=self._count_retry,
            on_send=self._count_request,
        )
        if response.status_code not in (200, 204):
            snippet = " ".join(response.text.split())[:160]
            raise QualysHTTPError(
                f"GET {path} failed with HTTP {response.status_code}: {snippet}", response.status_code
            )
        return response
