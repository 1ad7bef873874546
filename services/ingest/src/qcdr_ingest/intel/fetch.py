"""Download feeds politely and never lose the last good copy.

For each :class:`FeedSpec` the fetcher answers with a :class:`FeedResult` whose ``body`` is what to
parse: the fresh download, or the stored copy when the server said 304, when ``min_interval`` has
not passed since the last attempt (no request at all: Spamhaus DROP is fetched at most hourly), or
when the fetch failed (``STALE``, with a warning saying how old the copy is). Only a failure with no
copy at all is ``FAILED``. A fetched list without data lines is ``EMPTY``, never ``FAILED``; feeds not
marked ``may_be_empty`` get a warning as well.

http(s) requests are conditional (``If-None-Match`` / ``If-Modified-Since`` from the stored copy),
bounded in time (``timeout_s`` for the whole download) and size (``max_bytes``, enforced while
streaming), retried briefly on connection errors and 5xx. ``file://`` URLs are read on every run
(cheap; ``min_interval`` does not apply). URLs may carry API keys in their query: every message and
log line uses the redacted URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
from qcdr_common.logging import get_logger, redact_url

from qcdr_ingest.intel.feeds import format_duration
from qcdr_ingest.intel.model import FeedSpec, FeedStateStore, FeedStatus, StoredFeed

USER_AGENT = "qcdr-ingest/0.1 (threat-intel feeds)"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
EMPTY_WARNING = "feed is empty"
# 501 and 505 will answer the same way on a retry.
_NON_TRANSIENT_5XX = frozenset({501, 505})

log = get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def has_data_lines(body: bytes) -> bool:
    """Whether any line is neither blank nor a ``#`` / ``;`` comment (a cheap emptiness test)."""
    for line in body.splitlines():
        text = line.strip()
        if text and not text.startswith((b"#", b";")):
            return True
    return False


@dataclass(frozen=True, slots=True)
class FeedResult:
    """What happened to one feed, and the body to parse (None only for FAILED and DISABLED)."""

    spec: FeedSpec
    status: FeedStatus
    body: bytes | None = None
    fetched_at: datetime | None = None  # when ``body`` was downloaded or last confirmed (304)
    age: timedelta | None = None  # how old ``body`` is at ``checked_at``
    error: str | None = None  # one line, URL redacted: why this attempt (or the last one) failed
    warnings: tuple[str, ...] = ()
    http_status: int | None = None
    size_bytes: int = 0  # len(body)
    downloaded_bytes: int = 0  # received during this run (0 for 304, skipped, file reads)
    checked_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def usable(self) -> bool:
        """There is a body to parse (fresh, confirmed, skipped, stale or empty)."""
        return self.body is not None


@dataclass(frozen=True, slots=True)
class _Downloaded:
    body: bytes
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class _NotModified:
    http_status: int
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    http_status: int | None = None
    retryable: bool = False
    downloaded: int = 0


_Outcome = _Downloaded | _NotModified | _Failure


class _TooLargeError(Exception):
    pass


def _one_line(text: str, url: str, limit: int = 300) -> str:
    """Single line, at most ``limit`` characters, the feed URL (and any other URL) redacted."""
    flat = " ".join(text.replace(url, redact_url(url)).split())
    flat = redact_url(flat) if "://" in flat else flat
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FeedFetcher:
    """Fetch feeds into a :class:`FeedStateStore`; see the module docstring for the rules.

    ``http`` is borrowed (the caller closes it); without one the fetcher makes and owns a client,
    closed by :meth:`aclose` or ``async with``. ``clock`` returns aware datetimes (tests pass a fake).
    """

    def __init__(
        self,
        store: FeedStateStore,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        concurrency: int = 4,
        clock: Callable[[], datetime] = utc_now,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        if concurrency < 1 or max_bytes < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError("concurrency and max_bytes must be ≥ 1, retries ≥ 0 and timeout_s > 0")
        self._store = store
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), headers={"User-Agent": USER_AGENT}
        )
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._concurrency = concurrency
        self._clock = clock
        self._retries = retries
        self._backoff_s = backoff_s

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def fetch_all(self, specs: Iterable[FeedSpec]) -> list[FeedResult]:
        """One result per spec, in order; at most ``concurrency`` feeds in flight. One feed's
        unexpected error (a store outage, a bug) becomes its FAILED result, never the others'."""
        specs = list(specs)
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate feed names: {', '.join(duplicates)}")
        gate = asyncio.Semaphore(self._concurrency)

        async def one(spec: FeedSpec) -> FeedResult:
            async with gate:
                try:
                    return await self.fetch(spec)
                except Exception as exc:
                    error = _one_line(_describe(exc), spec.url)
                    # no traceback: its messages could carry the URL and its key
                    log.error("feed fetch crashed", feed=spec.name, error=error)
                    return FeedResult(spec, FeedStatus.FAILED, error=error, checked_at=self._clock())

        return list(await asyncio.gather(*(one(spec) for spec in specs)))

    async def fetch(self, spec: FeedSpec) -> FeedResult:
        if not spec.enabled:
            return FeedResult(spec, FeedStatus.DISABLED)
        result = await self._fetch(spec)
        self._log(result)
        return result

    async def _fetch(self, spec: FeedSpec) -> FeedResult:
        now = self._clock()
        stored = await self._store.load(spec.name)
        scheme = urlsplit(spec.url).scheme.lower()
        if scheme == "file":
            outcome: _Outcome = await self._read_file(spec)
        elif scheme in ("http", "https"):
            skipped = await self._skip_if_too_soon(spec, stored, now)
            if skipped is not None:
                return skipped
            current = stored if stored is not None and stored.url == spec.url else None
            outcome = await self._download(spec, current)
        else:
            outcome = _Failure(f"unsupported URL scheme {scheme!r}")
        return await self._settle(spec, stored, outcome, now)

    # ------------------------------------------------------------------ decisions

    async def _skip_if_too_soon(
        self, spec: FeedSpec, stored: StoredFeed | None, now: datetime
    ) -> FeedResult | None:
        if stored is not None:
            if stored.url != spec.url:
                return None  # the URL changed: the new source has never been asked
            attempted_at, last_error = stored.attempted_at, stored.last_error
        else:
            attempt = await self._store.last_attempt(spec.name)
            if attempt is None or attempt.url != spec.url:
                return None
            attempted_at, last_error = attempt.attempted_at, attempt.error
        since = now - attempted_at
        if since >= spec.min_interval:
            return None
        wait = format_duration(spec.min_interval - since)
        if stored is None:
            error = f"not attempted: the last attempt {format_duration(since)} ago failed"
            error += f" ({last_error})" if last_error else ""
            return FeedResult(
                spec, FeedStatus.FAILED, error=f"{error}; next attempt in {wait}", checked_at=now
            )
        warnings: list[str] = []
        if last_error:
            warnings.append(
                f"the last attempt {format_duration(since)} ago failed ({last_error}); "
                f"using the copy from {format_duration(now - stored.fetched_at)} ago"
            )
        if not spec.may_be_empty and not has_data_lines(stored.body):
            warnings.append(EMPTY_WARNING)
        return self._from_copy(spec, FeedStatus.SKIPPED, stored, now, warnings=warnings, error=last_error)

    async def _settle(
        self, spec: FeedSpec, stored: StoredFeed | None, outcome: _Outcome, now: datetime
    ) -> FeedResult:
        if isinstance(outcome, _NotModified):
            if stored is None or stored.url != spec.url:
                outcome = _Failure("HTTP 304 Not Modified but there is no stored copy", outcome.http_status)
            else:
                confirmed = stored.model_copy(
                    update={
                        "fetched_at": now,
                        "attempted_at": now,
                        "last_error": None,
                        "etag": outcome.etag or stored.etag,
                        "last_modified": outcome.last_modified or stored.last_modified,
                    }
                )
                await self._store.save(confirmed)
                warnings = [] if spec.may_be_empty or has_data_lines(stored.body) else [EMPTY_WARNING]
                return self._from_copy(
                    spec, FeedStatus.NOT_MODIFIED, confirmed, now, warnings, http_status=outcome.http_status
                )
        if isinstance(outcome, _Downloaded):
            await self._store.save(
                StoredFeed(
                    name=spec.name,
                    url=spec.url,
                    body=outcome.body,
                    etag=outcome.etag,
                    last_modified=outcome.last_modified,
                    fetched_at=now,
                    attempted_at=now,
                )
            )
            empty = not has_data_lines(outcome.body)
            return FeedResult(
                spec,
                FeedStatus.EMPTY if empty else FeedStatus.FRESH,
                body=outcome.body,
                fetched_at=now,
                age=timedelta(0),
                warnings=(EMPTY_WARNING,) if empty and not spec.may_be_empty else (),
                http_status=outcome.http_status,
                size_bytes=len(outcome.body),
                downloaded_bytes=len(outcome.body) if outcome.http_status is not None else 0,
                checked_at=now,
            )
        error = _one_line(outcome.error, spec.url)
        await self._store.record_failure(spec.name, spec.url, now, error)
        if stored is None:
            return FeedResult(
                spec,
                FeedStatus.FAILED,
                error=error,
                http_status=outcome.http_status,
                downloaded_bytes=outcome.downloaded,
                checked_at=now,
            )
        age = format_duration(now - stored.fetched_at)
        warning = f"fetch failed ({error}); using the last good copy from {age} ago"
        if stored.url != spec.url:
            warning += f" (downloaded from the previous URL {redact_url(stored.url)})"
        return self._from_copy(
            spec,
            FeedStatus.STALE,
            stored,
            now,
            [warning],
            error=error,
            http_status=outcome.http_status,
            downloaded=outcome.downloaded,
        )

    @staticmethod
    def _from_copy(
        spec: FeedSpec,
        status: FeedStatus,
        stored: StoredFeed,
        now: datetime,
        warnings: list[str],
        *,
        error: str | None = None,
        http_status: int | None = None,
        downloaded: int = 0,
    ) -> FeedResult:
        return FeedResult(
            spec,
            status,
            body=stored.body,
            fetched_at=stored.fetched_at,
            age=now - stored.fetched_at,
            error=error,
            warnings=tuple(warnings),
            http_status=http_status,
            size_bytes=len(stored.body),
            downloaded_bytes=downloaded,
            checked_at=now,
        )

    def _log(self, result: FeedResult) -> None:
        fields = {
            "feed": result.name,
            "url": redact_url(result.spec.url),
            "status": result.status.value,
            "bytes": result.size_bytes,
        }
        if result.status in (FeedStatus.FAILED, FeedStatus.STALE) or result.warnings:
            log.warning(
                "feed fetched with problems", error=result.error, warnings=list(result.warnings), **fields
            )
        else:
            log.info("feed fetched", **fields)

    # ------------------------------------------------------------------ I/O

    async def _read_file(self, spec: FeedSpec) -> _Outcome:
        path = Path(url2pathname(urlsplit(spec.url).path))
        limit = self._max_bytes

        def read() -> bytes:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
            if len(data) > limit:
                raise _TooLargeError
            return data

        try:
            return _Downloaded(await asyncio.to_thread(read))
        except _TooLargeError:
            return _Failure(f"larger than {limit} bytes")
        except OSError as exc:
            return _Failure(f"cannot read {path}: {exc.strerror or _describe(exc)}")

    async def _download(self, spec: FeedSpec, current: StoredFeed | None) -> _Outcome:
        headers: dict[str, str] = {}
        if current is not None:
            if current.etag:
                headers["If-None-Match"] = current.etag
            if current.last_modified:
                headers["If-Modified-Since"] = current.last_modified
        for attempt in range(self._retries + 1):
            outcome = await self._request_once(spec.url, headers)
            if not (isinstance(outcome, _Failure) and outcome.retryable) or attempt == self._retries:
                return outcome
            await asyncio.sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request_once(self, url: str, headers: dict[str, str]) -> _Outcome:
        received = 0
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._http.stream("GET", url, headers=headers, follow_redirects=True) as response,
            ):
                status = response.status_code
                etag, last_modified = response.headers.get("etag"), response.headers.get("last-modified")
                if status == 304:
                    return _NotModified(status, etag, last_modified)
                if not 200 <= status < 300:
                    transient = 500 <= status <= 599 and status not in _NON_TRANSIENT_5XX
                    return _Failure(f"HTTP {status} {response.reason_phrase}".strip(), status, transient)
                declared = response.headers.get("content-length", "")
                if declared.isascii() and declared.isdigit() and int(declared) > self._max_bytes:
                    too_large = f"larger than {self._max_bytes} bytes (Content-Length {declared})"
                    return _Failure(too_large, status)
                chunks: list[bytes] = []
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > self._max_bytes:
                        return _Failure(f"larger than {self._max_bytes} bytes", status, downloaded=received)
                    chunks.append(chunk)
                return _Downloaded(b"".join(chunks), status, etag, last_modified)
        except (TimeoutError, httpx.TimeoutException):
            # not retried: a slow source stays slow, and each try costs the whole timeout
            return _Failure(f"timed out after {self._timeout_s:g}s", downloaded=received)
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            return _Failure(f"connection failed: {_describe(exc)}", retryable=True, downloaded=received)
        except httpx.HTTPError as exc:  # too many redirects, bad content encoding, unsupported protocol
            return _Failure(_describe(exc), downloaded=received)
