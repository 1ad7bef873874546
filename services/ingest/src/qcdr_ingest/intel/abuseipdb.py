"""IP reputation from AbuseIPDB (API v2 ``check``), cached, within the daily quota, honest about gaps.

The original cached whatever came back for an hour and ignored the HTTP status, so a 429 became
"score 0" (clean) for an hour. Here only a parsed 200 answer is ever stored or scored; everything
else is reported as ``failed`` or ``not_checked``.

Decisions:

* **TTLs.** An answer with a score above 0 is reused for ``listed_ttl`` (24 h), a score-0 answer
  (negative cache) for ``clean_ttl`` (24 h). A day matches the daily quota window: at the free tier's
  1,000 checks a day, re-checking every address daily is the most the key can afford anyway.
  The cache is keyed by IP only; changing ``max_age_days`` does not invalidate it.
* **Blocking.** ``blocked`` = score >= threshold and not ``isWhitelisted``. AbuseIPDB whitelists
  well-known infrastructure (public resolvers, CDNs) that collects stray reports; blocking it would
  break the cluster, so a whitelisted address is never blocked whatever its score.
* **Quota.** ``X-RateLimit-*`` headers are tracked. When ``remaining`` drops to ``quota_reserve``
  (0 by default) the run stops asking: what is left goes to ``not_checked``, ``quota_exhausted`` is
  set and a message says when the quota resets. A 429 stops the run the same way when it is about
  the quota (``X-RateLimit-Remaining: 0``, a "daily rate limit" error, or a ``Retry-After`` longer
  than ``retry_after_max_s``); any other 429 is retried after its ``Retry-After``.
* **Errors.** 401/403 mean the key is wrong: :class:`AbuseIPDBKeyError` (one line), no report.
  Timeouts, connection errors and 5xx are retried with backoff, then that IP is ``failed``; after
  ``max_consecutive_failures`` failures in a row the run stops (the service is down, not the IP).
* **Stale answers.** An IP whose re-check failed or was not made keeps its expired cached answer in
  ``results`` (listed in ``stale``, and it can be ``blocked``): a day-old score beats none.
* Addresses are canonical (``::ffff:1.2.3.4`` is ``1.2.3.4``); non-global ones (private, loopback,
  CGNAT, documentation, multicast...) are never sent.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from qcdr_common.logging import get_logger, redact_url

from qcdr_ingest.intel.model import Reputation, ReputationCache
from qcdr_ingest.qualys.retry import RetryNotice, RetryPolicy, retry_after_seconds, send_with_retries

DEFAULT_BASE_URL = "https://api.abuseipdb.com/api/v2"
NO_KEY_MESSAGE = "AbuseIPDB: no ABUSEIPDB_API_KEY, reputation not checked"

_log = get_logger(__name__)


class AbuseIPDBSettings(BaseSettings):
    """``ABUSEIPDB_API_KEY`` as in the original; everything else ``QCDR_ABUSEIPDB_*``."""

    model_config = SettingsConfigDict(env_prefix="QCDR_ABUSEIPDB_", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ABUSEIPDB_API_KEY", "QCDR_ABUSEIPDB_API_KEY")
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Override for the local double.")
    max_age_days: int = Field(default=90, ge=1, le=365, description="maxAgeInDays of each check.")
    listed_ttl: timedelta = Field(default=timedelta(hours=24), description="Reuse of a score > 0.")
    clean_ttl: timedelta = Field(default=timedelta(hours=24), description="Reuse of a score of 0.")
    concurrency: int = Field(default=5, ge=1, le=50)
    quota_reserve: int = Field(default=0, ge=0, description="Stop when this many daily checks are left.")
    timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=10.0, ge=0)
    retry_after_max_s: float = Field(
        default=60.0, ge=0, description="A 429 asking for a longer wait ends the run instead."
    )
    max_consecutive_failures: int = Field(default=5, ge=1)

    @field_validator("api_key")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            retry_after_max_s=self.retry_after_max_s,
        )

    def ttl_for(self, reputation: Reputation) -> timedelta:
        return self.listed_ttl if reputation.score > 0 else self.clean_ttl


class AbuseIPDBError(Exception):
    """``str(error)`` is one line fit for a CLI."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class AbuseIPDBKeyError(AbuseIPDBError):
    """No key configured, or the key was rejected (401/403)."""


class QuotaInfo(BaseModel):
    """The daily ``check`` quota as last reported by the API (``None``: never told)."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: AwareDatetime | None = None


class ReputationReport(BaseModel):
    """What one :meth:`ReputationChecker.check_many` found, and what it could not find out."""

    model_config = ConfigDict(extra="forbid")

    threshold: int
    results: dict[str, Reputation] = Field(description="Fresh, cached and stale answers by IP.")
    blocked: list[str] = Field(description="score >= threshold and not whitelisted.")
    checked: list[str] = Field(description="Answered by the API in this run.")
    cached: list[str] = Field(description="Served from a cache entry younger than its TTL.")
    stale: list[str] = Field(
        description="Expired cache entry used because the re-check failed or was not made."
    )
    skipped_non_global: list[str]
    invalid: list[str] = Field(description="Inputs that are not IP addresses.")
    failed: dict[str, str] = Field(description="IP -> why; nothing was cached for these.")
    not_checked: list[str] = Field(description="Not asked: the run stopped (quota, throttling, outage).")
    quota: QuotaInfo
    quota_exhausted: bool = False
    requests: int = 0
    retries: int = 0
    messages: list[str] = Field(default_factory=list)

    def from_cache(self, ip: str) -> bool:
        return ip in self.cached or ip in self.stale

    def summary(self) -> str:
        return (
            f"AbuseIPDB: {len(self.checked)} checked, {len(self.cached)} from cache, "
            f"{len(self.skipped_non_global)} non-global skipped, {len(self.failed)} failed, "
            f"{len(self.not_checked)} not checked; {len(self.blocked)} at or above {self.threshold}"
        )


class _CheckData(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    score: int = Field(alias="abuseConfidenceScore", ge=0, le=100)
    total_reports: int | None = Field(default=0, alias="totalReports", ge=0)
    usage_type: str | None = Field(default=None, alias="usageType")
    country_code: str | None = Field(default=None, alias="countryCode")
    is_whitelisted: bool | None = Field(default=None, alias="isWhitelisted")
    is_tor: bool | None = Field(default=None, alias="isTor")
    last_reported_at: AwareDatetime | None = Field(default=None, alias="lastReportedAt")


class _CheckAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: _CheckData


def parse_check_answer(ip: str, body: bytes, checked_at: datetime) -> Reputation:
    """A ``check`` 200 body as a :class:`Reputation`; ``ValueError`` when it is not one."""
    try:
        data = _CheckAnswer.model_validate_json(body).data
    except ValidationError as exc:
        raise ValueError(f"not an AbuseIPDB check answer ({exc.error_count()} problems)") from exc
    return Reputation(
        ip=ip,
        score=data.score,
        total_reports=data.total_reports or 0,
        usage_type=data.usage_type,
        country_code=data.country_code,
        is_whitelisted=data.is_whitelisted,
        is_tor=data.is_tor,
        last_reported_at=data.last_reported_at,
        checked_at=checked_at,
    )


def error_detail(response: httpx.Response) -> str:
    """The ``errors[0].detail`` of an AbuseIPDB error body, else the start of the body."""
    try:
        errors = response.json().get("errors")
        detail = str(errors[0]["detail"])
    except (ValueError, AttributeError, LookupError, TypeError):
        detail = response.text
    return " ".join(detail.split())[:200]


def parse_reset(value: str | None, now: datetime) -> datetime | None:
    """``X-RateLimit-Reset``: epoch seconds (AbuseIPDB), else delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value.strip())
    except ValueError:
        number = None
    if number is not None and number >= 1e9:
        return datetime.fromtimestamp(number, UTC)
    seconds = retry_after_seconds(value, now=now)
    return now + timedelta(seconds=seconds) if seconds is not None else None


def _header_int(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name].strip())
    except (KeyError, ValueError):
        return None


def canonical_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ValueError`` for a non-address; IPv4-mapped IPv6 becomes IPv4."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def worth_a_query(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_global and not address.is_multicast


def _ip_key(ip: str) -> tuple[int, int]:
    address = ipaddress.ip_address(ip)
    return address.version, int(address)


StopKind = Literal["quota", "throttled", "key", "unavailable"]


@dataclass(slots=True)
class _Stop:
    kind: StopKind
    detail: str


class _StopRun(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside a request attempt: do not retry, do not ask again in this run."""

    def __init__(self, stop: _Stop) -> None:
        super().__init__(stop.detail)
        self.stop = stop


@dataclass(slots=True)
class _Run:
    quota: QuotaInfo = field(default_factory=QuotaInfo)
    fresh: dict[str, Reputation] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    not_checked: list[str] = field(default_factory=list)
    stop: _Stop | None = None
    cache_error: str | None = None
    requests: int = 0
    retries: int = 0
    consecutive_failures: int = 0

    def halt(self, stop: _Stop) -> None:
        if self.stop is None:  # the first reason is the one worth telling
            self.stop = stop

    def note_quota(self, response: httpx.Response, now: datetime) -> None:
        limit = _header_int(response, "X-RateLimit-Limit")
        remaining = _header_int(response, "X-RateLimit-Remaining")
        reset_at = parse_reset(response.headers.get("X-RateLimit-Reset"), now)
        if response.status_code == 429 and reset_at is None:
            wait = retry_after_seconds(response.headers.get("Retry-After"), now=now)
            reset_at = now + timedelta(seconds=wait) if wait is not None else None
        # Answers of concurrent requests arrive out of order: the lowest count is the latest.
        if remaining is not None and (self.quota.remaining is None or remaining < self.quota.remaining):
            self.quota.remaining = remaining
        self.quota.limit = limit if limit is not None else self.quota.limit
        self.quota.reset_at = reset_at if reset_at is not None else self.quota.reset_at


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReputationChecker:
    """Checks many IPs against AbuseIPDB; see the module docstring for the rules."""

    def __init__(
        self,
        settings: AbuseIPDBSettings,
        cache: ReputationCache,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if settings.api_key is None:
            raise AbuseIPDBKeyError(NO_KEY_MESSAGE)
        self._settings = settings
        self._key = settings.api_key.get_secret_value().strip()
        self._cache = cache
        self._http = http
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def from_environment(
        cls,
        cache: ReputationCache,
        *,
        settings: AbuseIPDBSettings | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> ReputationChecker | None:
        """A checker, or ``None`` without ``ABUSEIPDB_API_KEY`` (then say :data:`NO_KEY_MESSAGE`)."""
        settings = settings if settings is not None else AbuseIPDBSettings()
        return cls(settings, cache, http=http) if settings.api_key is not None else None

    async def check_many(self, ips: Iterable[str], threshold: int) -> ReputationReport:
        """Reputation of each distinct global address; raises :class:`AbuseIPDBKeyError` on a bad key."""
        if isinstance(ips, str):
            raise TypeError("check_many wants an iterable of addresses, not one string")
        if not 1 <= threshold <= 100:
            raise ValueError(f"threshold must be 1..100, not {threshold}")
        candidates: dict[str, None] = {}
        invalid: dict[str, None] = {}
        non_global: dict[str, None] = {}
        for text in ips:
            try:
                address = canonical_ip(text)
            except ValueError:
                invalid[text] = None
                continue
            (candidates if worth_a_query(address) else non_global)[str(address)] = None

        stored = await self._cache.get_many(list(candidates)) if candidates else {}
        now = self._clock()
        results: dict[str, Reputation] = {}
        to_query: list[str] = []
        for ip in candidates:
            entry = stored.get(ip)
            if entry is not None and now - entry.checked_at < self._settings.ttl_for(entry):
                results[ip] = entry
            else:
                to_query.append(ip)
        cached = list(results)

        run = _Run()
        if to_query:
            await self._query_all(to_query, run)
        if run.fresh:
            await self._store(list(run.fresh.values()), run)
        if run.stop is not None and run.stop.kind == "key":
            raise AbuseIPDBKeyError(run.stop.detail)

        results.update(run.fresh)
        stale = [ip for ip in to_query if ip not in run.fresh and ip in stored]
        for ip in stale:
            results[ip] = stored[ip]
        return self._report(threshold, results, cached, stale, list(non_global), list(invalid), run)

    async def _query_all(self, to_query: list[str], run: _Run) -> None:
        queue = deque(to_query)

        async def worker(http: httpx.AsyncClient) -> None:
            while queue and run.stop is None:
                await self._check_one(http, queue.popleft(), run)

        workers = min(self._settings.concurrency, len(to_query))
        if self._http is not None:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker(self._http))
        else:
            limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
            async with httpx.AsyncClient(limits=limits) as http, asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker(http))
        run.not_checked.extend(queue)

    async def _check_one(self, http: httpx.AsyncClient, ip: str, run: _Run) -> None:
        settings = self._settings
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        attempts = 0

        async def send() -> httpx.Response:
            nonlocal attempts
            if run.stop is not None:
                raise _StopRun(run.stop)
            attempts += 1
            run.requests += 1
            response = await http.get(
                f"{settings.base_url}/check",
                params={"ipAddress": ip, "maxAgeInDays": str(settings.max_age_days)},
                headers={"Key": self._key, "Accept": "application/json"},
                timeout=timeout,
            )
            run.note_quota(response, self._clock())
            if response.status_code == 429:
                stop = self._throttle_stop(response)
                if stop is not None:
                    run.halt(stop)
                    raise _StopRun(stop)
            return response

        def on_retry(notice: RetryNotice) -> None:
            run.retries += 1
            _log.warning(
                "abuseipdb.retry", ip=ip, attempt=notice.attempt, delay_s=notice.delay_s, why=notice.reason
            )

        try:
            response = await send_with_retries(
                send, settings.retry_policy, sleep=self._sleep, on_retry=on_retry
            )
        except _StopRun:
            run.not_checked.append(ip)
            return
        except httpx.HTTPError as exc:
            self._fail(run, ip, f"{type(exc).__name__} after {attempts} attempts")
            return

        status = response.status_code
        if status == 200:
            try:
                reputation = parse_check_answer(ip, response.content, self._clock())
            except ValueError as exc:
                self._fail(run, ip, f"HTTP 200 but {exc}")
                return
            run.fresh[ip] = reputation
            run.consecutive_failures = 0
            remaining = run.quota.remaining
            if remaining is not None and remaining <= settings.quota_reserve:
                run.halt(_Stop("quota", f"{remaining} daily checks left"))
        elif status in (401, 403):
            run.not_checked.append(ip)
            detail = error_detail(response).replace(self._key, "***")
            run.halt(
                _Stop(
                    "key", f"AbuseIPDB rejected the API key (HTTP {status}: {detail}); fix ABUSEIPDB_API_KEY"
                )
            )
        elif status == 429 or status >= 500:
            self._fail(run, ip, f"HTTP {status} after {attempts} attempts: {error_detail(response)}")
        else:
            self._fail(run, ip, f"HTTP {status}: {error_detail(response)}")

    def _throttle_stop(self, response: httpx.Response) -> _Stop | None:
        """Why a 429 should end the run rather than be retried; ``None`` to retry."""
        if _header_int(response, "X-RateLimit-Remaining") == 0:
            return _Stop("quota", "0 daily checks left")
        detail = error_detail(response)
        if "daily" in detail.lower():
            return _Stop("quota", detail)
        wait = retry_after_seconds(response.headers.get("Retry-After"), now=self._clock())
        if wait is not None and wait > self._settings.retry_after_max_s:
            return _Stop(
                "throttled", f"asked to wait {wait:.0f} s, more than {self._settings.retry_after_max_s:g} s"
            )
        return None

    def _fail(self, run: _Run, ip: str, why: str) -> None:
        run.failed[ip] = why
        run.consecutive_failures += 1
        _log.warning("abuseipdb.failed", ip=ip, why=why)
        if run.consecutive_failures >= self._settings.max_consecutive_failures:
            where = redact_url(self._settings.base_url)
            run.halt(_Stop("unavailable", f"{run.consecutive_failures} lookups in a row failed at {where}"))

    async def _store(self, items: list[Reputation], run: _Run) -> None:
        try:
            await self._cache.put_many(items)
        except Exception as exc:  # the answers are still good for this run; the quota is spent
            _log.error("abuseipdb.cache_write_failed", error=str(exc), count=len(items))
            run.cache_error = f"AbuseIPDB: could not cache {len(items)} answers ({type(exc).__name__}: {exc})"

    def _report(
        self,
        threshold: int,
        results: dict[str, Reputation],
        cached: list[str],
        stale: list[str],
        non_global: list[str],
        invalid: list[str],
        run: _Run,
    ) -> ReputationReport:
        def ordered(ips: Iterable[str]) -> list[str]:
            return sorted(ips, key=_ip_key)

        blocked = [ip for ip, rep in results.items() if rep.score >= threshold and not rep.is_whitelisted]
        messages: list[str] = []
        stop = run.stop
        if stop is not None:
            left = len(run.not_checked)
            if stop.kind in ("quota", "throttled"):
                quota = run.quota
                reset = quota.reset_at
                when = reset.strftime("%Y-%m-%d %H:%M:%SZ") if reset is not None else "at an unknown time"
                if stop.kind == "throttled":
                    what = f"rate limited, {stop.detail}"
                elif quota.remaining is not None and quota.limit is not None:
                    kept = f" (reserve {self._settings.quota_reserve})" if quota.remaining else ""
                    what = f"daily quota exhausted, {quota.remaining} of {quota.limit} checks left{kept}"
                else:
                    what = f"daily quota exhausted, {stop.detail}"
                messages.append(f"AbuseIPDB: {what}; {left} IPs not checked this run; quota resets {when}")
            else:
                messages.append(f"AbuseIPDB: stopped, {stop.detail}; {left} IPs not checked this run")
        if run.failed:
            first = next(iter(run.failed.values()))
            messages.append(
                f"AbuseIPDB: {len(run.failed)} lookups failed (e.g. {first}); not cached, retried next run"
            )
        if stale:
            messages.append(f"AbuseIPDB: {len(stale)} IPs use an expired cached answer")
        if invalid:
            messages.append(
                f"AbuseIPDB: {len(invalid)} inputs are not IP addresses, e.g. {invalid[0][:60]!r}"
            )
        if run.cache_error:
            messages.append(" ".join(run.cache_error.split())[:300])
        return ReputationReport(
            threshold=threshold,
            results=dict(sorted(results.items(), key=lambda item: _ip_key(item[0]))),
            blocked=ordered(blocked),
            checked=ordered(run.fresh),
            cached=ordered(cached),
            stale=ordered(stale),
            skipped_non_global=ordered(non_global),
            invalid=invalid,
            failed={ip: run.failed[ip] for ip in ordered(run.failed)},
            not_checked=ordered(run.not_checked),
            quota=run.quota,
            quota_exhausted=stop is not None and stop.kind in ("quota", "throttled"),
            requests=run.requests,
            retries=run.retries,
            messages=messages,
        )
