"""AbuseIPDB reputation: the checker against the local API double (and MockTransport for odd answers)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from qcdr_ingest.intel.abuseipdb import (
    NO_KEY_MESSAGE,
    AbuseIPDBKeyError,
    AbuseIPDBSettings,
    ReputationChecker,
    parse_reset,
)
from qcdr_ingest.intel.abuseipdb_double import (
    DEFAULT_KEY,
    AbuseIPDBDouble,
    AbuseIPDBDoubleConfig,
    Fault,
    IPAnswer,
    hashed_answer,
    serve_abuseipdb_double,
)
from qcdr_ingest.intel.model import Reputation
from qcdr_ingest.intel.state_files import FileReputationCache

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BAD, EDGE, BELOW, CLEAN, FRIEND = "45.95.0.1", "45.95.0.2", "45.95.0.3", "45.95.0.4", "8.8.8.8"
HOSTING = "Data Center/Web Hosting/Transit"
ANSWERS = {
    BAD: IPAnswer(score=90, total_reports=321, usage_type=HOSTING, country_code="NL", is_tor=True,
                  last_reported_at=datetime(2026, 2, 27, 8, 30, tzinfo=UTC)),
    EDGE: IPAnswer(score=50, total_reports=12),
    BELOW: IPAnswer(score=49, total_reports=7),
    CLEAN: IPAnswer(score=0, total_reports=0),
    FRIEND: IPAnswer(score=100, total_reports=4000, is_whitelisted=True),
}  # fmt: skip


def public_ips(n: int, prefix: str = "45.96") -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250 + 1}" for i in range(n)]


@pytest.fixture(autouse=True)
def _no_abuseipdb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real key must never reach a test (or AbuseIPDB)."""
    for name in ("ABUSEIPDB_API_KEY", "QCDR_ABUSEIPDB_API_KEY", "QCDR_ABUSEIPDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


class MemoryCache:
    """The ReputationCache protocol in a dict; counts writes."""

    def __init__(self) -> None:
        self.items: dict[str, Reputation] = {}
        self.writes = 0

    async def get_many(self, ips: list[str]) -> dict[str, Reputation]:
        return {ip: self.items[ip] for ip in ips if ip in self.items}

    async def put_many(self, items: list[Reputation]) -> None:
        self.writes += 1
        self.items.update({item.ip: item for item in items})


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Sleeps:
    """Records requested waits instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_settings(base_url: str, **overrides: Any) -> AbuseIPDBSettings:
    values: dict[str, Any] = {
        "api_key": SecretStr(DEFAULT_KEY),
        "base_url": base_url,
        "max_retries": 2,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.004,
        "retry_after_max_s": 30.0,
        "timeout_s": 2.0,
        "connect_timeout_s": 2.0,
    }
    values.update(overrides)
    return AbuseIPDBSettings(_env_file=None, **values)


@contextmanager
def served(**config: Any) -> Iterator[tuple[AbuseIPDBDouble, str]]:
    config.setdefault("answers", ANSWERS)
    double = AbuseIPDBDouble(AbuseIPDBDoubleConfig(**config))
    with serve_abuseipdb_double(double) as url:
        yield double, url


def checker(
    url: str, cache: Any = None, *, clock: Clock | None = None, sleep: Sleeps | None = None, **settings: Any
) -> ReputationChecker:
    return ReputationChecker(
        make_settings(url, **settings),
        cache if cache is not None else MemoryCache(),
        clock=clock or Clock(),
        sleep=sleep or Sleeps(),
    )


# ----------------------------------------------------------------------------- answers and threshold


async def test_scores_fields_and_threshold() -> None:
    cache = MemoryCache()
    with served() as (double, url):
        report = await checker(url, cache).check_many([BAD, EDGE, BELOW, CLEAN], threshold=50)

    assert report.blocked == [BAD, EDGE]  # >= threshold
    assert report.checked == [BAD, EDGE, BELOW, CLEAN]
    assert report.cached == report.not_checked == report.messages == []
    assert report.failed == {}
    bad = report.results[BAD]
    assert (bad.score, bad.total_reports, bad.usage_type, bad.country_code) == (90, 321, HOSTING, "NL")
    assert bad.is_tor is True
    assert bad.is_whitelisted is False
    assert bad.last_reported_at == datetime(2026, 2, 27, 8, 30, tzinfo=UTC)
    assert bad.checked_at == T0
    assert report.results[CLEAN].last_reported_at is None
    assert set(cache.items) == {BAD, EDGE, BELOW, CLEAN}
    assert double.stats.answered == report.requests == 4
    assert report.summary().startswith("AbuseIPDB: 4 checked, 0 from cache")


async def test_whitelisted_is_never_blocked() -> None:
    with served() as (_, url):
        report = await checker(url).check_many([FRIEND, BAD], threshold=50)
    assert report.results[FRIEND].score == 100
    assert report.results[FRIEND].is_whitelisted is True
    assert report.blocked == [BAD]


async def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"abuseConfidenceScore": 7, "totalReports": 1}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        settings = make_settings("https://abuseipdb.invalid/api/v2/", max_age_days=30)
        report = await ReputationChecker(settings, MemoryCache(), http=http).check_many(
            ["2001:4860:4860::8888"], threshold=50
        )
    (request,) = seen
    assert request.method == "GET"
    assert str(request.url.copy_with(query=None)) == "https://abuseipdb.invalid/api/v2/check"
    assert dict(request.url.params) == {"ipAddress": "2001:4860:4860::8888", "maxAgeInDays": "30"}
    assert request.headers["Key"] == DEFAULT_KEY
    assert request.headers["Accept"] == "application/json"
    assert report.results["2001:4860:4860::8888"].score == 7


async def test_dedupes_and_skips_what_is_not_worth_a_query() -> None:
    non_global = ["10.0.0.1", "127.0.0.1", "192.168.1.1", "100.64.0.1", "2001:db8::1", "224.0.0.1", "fe80::1"]
    with served() as (double, url):
        report = await checker(url).check_many(
            [BAD, BAD, f" {BAD} ", f"::ffff:{BAD}", *non_global, "not-an-ip"], threshold=50
        )
    assert double.stats.check_requests == 1
    assert report.checked == [BAD]
    assert sorted(report.skipped_non_global) == sorted(str(ipaddress.ip_address(ip)) for ip in non_global)
    assert report.invalid == ["not-an-ip"]
    assert any("not IP addresses" in message for message in report.messages)


async def test_threshold_and_input_are_validated() -> None:
    check = checker("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="threshold"):
        await check.check_many([BAD], threshold=0)
    with pytest.raises(TypeError):
        await check.check_many(BAD, threshold=50)


# ----------------------------------------------------------------------------- cache and TTLs


async def test_cache_hit_within_ttl_and_expiry_after() -> None:
    cache, clock = MemoryCache(), Clock()
    with served() as (double, url):
        await checker(url, cache, clock=clock).check_many([BAD, CLEAN], threshold=50)
        assert double.stats.check_requests == 2

        clock.now = T0 + timedelta(hours=23, minutes=59)
        report = await checker(url, cache, clock=clock).check_many([BAD, CLEAN], threshold=50)
        assert double.stats.check_requests == 2  # nothing asked
        assert report.cached == [BAD, CLEAN]
        assert report.checked == []
        assert report.from_cache(BAD)
        assert report.blocked == [BAD]
        assert report.results[BAD].checked_at == T0

        clock.now = T0 + timedelta(hours=24, seconds=1)
        report = await checker(url, cache, clock=clock).check_many([BAD, CLEAN], threshold=50)
        assert double.stats.check_requests == 4
        assert report.checked == [BAD, CLEAN]
        assert cache.items[BAD].checked_at == clock.now


async def test_clean_and_listed_ttls_are_separate() -> None:
    cache, clock = MemoryCache(), Clock()
    with served() as (double, url):
        ttl: dict[str, Any] = {"listed_ttl": timedelta(hours=24), "clean_ttl": timedelta(hours=1)}
        await checker(url, cache, clock=clock, **ttl).check_many([BAD, CLEAN], threshold=50)
        clock.now = T0 + timedelta(hours=2)
        report = await checker(url, cache, clock=clock, **ttl).check_many([BAD, CLEAN], threshold=50)
    assert report.cached == [BAD]
    assert report.checked == [CLEAN]
    assert double.stats.per_ip[CLEAN] == 2


# ----------------------------------------------------------------------------- quota


async def test_quota_headers_are_tracked() -> None:
    with served(daily_limit=100, remaining=50) as (_, url):
        report = await checker(url).check_many([BAD, EDGE, CLEAN], threshold=50)
    assert (report.quota.limit, report.quota.remaining) == (100, 47)
    assert not report.quota_exhausted


@pytest.mark.parametrize("concurrency", [1, 5])
async def test_quota_exhaustion_mid_run_stops_asking(concurrency: int) -> None:
    cache = MemoryCache()
    ips = public_ips(10)
    with served(daily_limit=1000, remaining=3) as (double, url):
        report = await checker(url, cache, concurrency=concurrency).check_many(ips, threshold=50)
    assert len(report.checked) == 3
    assert len(report.not_checked) == 7
    assert sorted(report.checked + report.not_checked, key=ipaddress.ip_address) == ips
    assert report.quota_exhausted
    assert report.quota.remaining == 0
    assert report.failed == {}
    assert set(cache.items) == set(report.checked)  # a refusal is never cached as a score
    assert double.stats.answered == 3
    assert double.stats.check_requests <= 3 + (concurrency - 1)  # only requests already in flight
    (message,) = report.messages
    assert "daily quota exhausted" in message
    assert "0 of 1000" in message
    assert "7 IPs not checked" in message
    assert "\n" not in message


async def test_429_for_the_daily_quota_stops_at_once() -> None:
    cache, sleeps = MemoryCache(), Sleeps()
    ips = public_ips(6)
    with served(daily_limit=1000, remaining=0) as (double, url):
        report = await checker(url, cache, sleep=sleeps, concurrency=1).check_many(ips, threshold=50)
        reset_at = double.reset_at
    assert double.stats.check_requests == 1
    assert sleeps.delays == []  # no retry
    assert report.checked == []
    assert report.not_checked == ips
    assert report.results == {}
    assert cache.writes == 0
    assert report.quota_exhausted
    assert report.quota.reset_at == reset_at.replace(microsecond=0)
    assert reset_at.strftime("%Y-%m-%d %H:%M:%SZ") in report.messages[0]


async def test_429_with_retry_after_is_retried_then_succeeds() -> None:
    sleeps = Sleeps()
    with served(faults=[Fault(kind="429", at=(1,), retry_after="7")]) as (double, url):
        report = await checker(url, sleep=sleeps).check_many([BAD], threshold=50)
    assert sleeps.delays == [7.0]
    assert report.checked == [BAD]
    assert report.retries == 1
    assert double.stats.check_requests == 2
    assert not report.quota_exhausted


async def _mock_check(handler: Any, ips: list[str], **settings: Any) -> tuple[Any, Sleeps]:
    sleeps = Sleeps()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        check = ReputationChecker(
            make_settings("https://abuseipdb.invalid/api/v2", **settings),
            MemoryCache(),
            http=http,
            sleep=sleeps,
        )
        return await check.check_many(ips, threshold=50), sleeps


async def test_429_with_a_daily_limit_message_only_stops() -> None:
    body = {
        "errors": [{"detail": "Daily rate limit of 1000 requests exceeded for this endpoint.", "status": 429}]
    }
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params["ipAddress"])
        return httpx.Response(429, json=body)

    report, sleeps = await _mock_check(handler, public_ips(3), concurrency=1)
    assert len(calls) == 1
    assert sleeps.delays == []
    assert report.quota_exhausted
    assert len(report.not_checked) == 3
    assert "Daily rate limit" in report.messages[0]
    assert "at an unknown time" in report.messages[0]


async def test_429_asking_for_more_than_the_cap_stops() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"Retry-After": "3600"}, json={"errors": [{"detail": "slow down"}]}
        )

    report, sleeps = await _mock_check(handler, public_ips(2), concurrency=1, retry_after_max_s=30)
    assert sleeps.delays == []
    assert report.quota_exhausted
    assert len(report.not_checked) == 2
    assert "asked to wait 3600 s" in report.messages[0]


async def test_quota_reserve_is_kept() -> None:
    with served(daily_limit=100, remaining=5) as (double, url):
        report = await checker(url, quota_reserve=3, concurrency=1).check_many(public_ips(5), threshold=50)
    assert len(report.checked) == 2
    assert double.remaining == 3
    assert "reserve 3" in report.messages[0]


# ----------------------------------------------------------------------------- errors


async def test_bad_key_is_one_line_error_and_nothing_else() -> None:
    cache = MemoryCache()
    with served() as (double, url):
        check = checker(url, cache, api_key=SecretStr("wrong-key-123"))
        with pytest.raises(AbuseIPDBKeyError) as caught:
            await check.check_many(public_ips(8), threshold=50)
    message = str(caught.value)
    assert "\n" not in message
    assert "HTTP 401" in message
    assert "ABUSEIPDB_API_KEY" in message
    assert "wrong-key-123" not in message
    assert cache.writes == 0
    assert double.stats.check_requests <= 5  # stopped, not 8 (and no retries of a 401)


def test_no_key_means_no_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = MemoryCache()
    assert ReputationChecker.from_environment(cache) is None
    monkeypatch.setenv("ABUSEIPDB_API_KEY", "   ")
    assert ReputationChecker.from_environment(cache) is None
    with pytest.raises(AbuseIPDBKeyError, match="no ABUSEIPDB_API_KEY"):
        ReputationChecker(AbuseIPDBSettings(_env_file=None), cache)
    assert NO_KEY_MESSAGE == "AbuseIPDB: no ABUSEIPDB_API_KEY, reputation not checked"

    monkeypatch.setenv("ABUSEIPDB_API_KEY", "k-from-env")
    monkeypatch.setenv("QCDR_ABUSEIPDB_BASE_URL", "http://127.0.0.1:8081/api/v2/")
    settings = AbuseIPDBSettings(_env_file=None)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "k-from-env"
    assert settings.base_url == "http://127.0.0.1:8081/api/v2"
    assert "k-from-env" not in repr(settings)
    assert ReputationChecker.from_environment(cache) is not None


async def test_5xx_is_retried_then_failed_and_not_cached() -> None:
    cache = MemoryCache()
    with served(faults=[Fault(kind="500", ips=(EDGE,))]) as (double, url):
        report = await checker(url, cache).check_many([BAD, EDGE], threshold=50)
        assert double.stats.per_ip[EDGE] == 3  # 1 + max_retries
        assert report.checked == [BAD]
        assert list(report.failed) == [EDGE]
        assert "HTTP 500 after 3 attempts" in report.failed[EDGE]
        assert EDGE not in report.results
        assert EDGE not in report.blocked
        assert set(cache.items) == {BAD}
        assert any("1 lookups failed" in message for message in report.messages)

        again = await checker(url, cache).check_many([BAD, EDGE], threshold=50)
    assert again.cached == [BAD]
    assert list(again.failed) == [EDGE]  # asked again: a failure was not remembered as an answer


async def test_timeouts_are_retried_then_failed() -> None:
    with served(faults=[Fault(kind="slow", ips=(EDGE,), delay_s=0.2)]) as (double, url):
        report = await checker(url, timeout_s=0.05, max_retries=1).check_many([EDGE, BAD], threshold=50)
    assert report.failed[EDGE] == "ReadTimeout after 2 attempts"
    assert report.checked == [BAD]
    assert double.stats.per_ip[EDGE] == 2


async def test_expired_answer_is_used_when_the_recheck_fails() -> None:
    cache, clock = MemoryCache(), Clock()
    with served() as (_, url):
        await checker(url, cache, clock=clock).check_many([BAD], threshold=50)
    clock.now = T0 + timedelta(days=2)
    with served(faults=[Fault(kind="503", retry_after=None)]) as (_, url):
        report = await checker(url, cache, clock=clock).check_many([BAD], threshold=50)
    assert report.stale == [BAD]
    assert list(report.failed) == [BAD]
    assert report.blocked == [BAD]
    assert report.results[BAD].checked_at == T0
    assert report.from_cache(BAD)


async def test_a_dead_service_ends_the_run() -> None:
    with served(faults=[Fault(kind="502")]) as (double, url):
        report = await checker(url, concurrency=1, max_retries=0, max_consecutive_failures=3).check_many(
            public_ips(10), threshold=50
        )
    assert len(report.failed) == 3
    assert len(report.not_checked) == 7
    assert not report.quota_exhausted
    assert double.stats.check_requests == 3
    assert "3 lookups in a row failed" in report.messages[0]


# ----------------------------------------------------------------------------- concurrency, restart


async def test_concurrency_is_bounded() -> None:
    with served(latency_s=0.03) as (double, url):
        report = await checker(url, concurrency=3).check_many(public_ips(20), threshold=50)
    assert len(report.checked) == 20
    assert 2 <= double.stats.max_in_flight <= 3


async def test_cache_survives_a_restart(tmp_path: Path) -> None:
    ips = [BAD, CLEAN, *public_ips(3)]
    with served() as (double, url):
        first = await checker(url, FileReputationCache(tmp_path)).check_many(ips, threshold=50)
        assert double.stats.check_requests == 5
        assert (tmp_path / "reputation.json").exists()
        # A new process: new cache object on the same directory, new checker.
        second = await checker(url, FileReputationCache(tmp_path)).check_many(ips, threshold=50)
    assert double.stats.check_requests == 5
    assert second.cached == first.checked
    assert second.blocked == first.blocked
    assert second.results == first.results


# ----------------------------------------------------------------------------- helpers and the double


def test_parse_reset_accepts_epoch_delta_and_date() -> None:
    assert parse_reset("1772409600", T0) == datetime(2026, 3, 2, tzinfo=UTC)
    assert parse_reset("60", T0) == T0 + timedelta(seconds=60)
    assert parse_reset("Mon, 02 Mar 2026 00:00:00 GMT", T0) == datetime(2026, 3, 2, tzinfo=UTC)
    assert parse_reset("soon", T0) is None
    assert parse_reset(None, T0) is None


def test_double_answers_like_abuseipdb() -> None:
    with served(daily_limit=2) as (double, url):
        ok = httpx.get(f"{url}/check", params={"ipAddress": BAD}, headers={"Key": DEFAULT_KEY})
        key_in_query = httpx.get(f"{url}/check", params={"ipAddress": "1.1.1.1", "key": DEFAULT_KEY})
        spent = httpx.get(f"{url}/check", params={"ipAddress": BAD}, headers={"Key": DEFAULT_KEY})
        no_key = httpx.get(f"{url}/check", params={"ipAddress": BAD})
        bad_ip = httpx.get(f"{url}/check", params={"ipAddress": "999.1.1.1"}, headers={"Key": DEFAULT_KEY})
        stats = httpx.get(url.removesuffix("/api/v2") + "/__double/stats").json()
    data = ok.json()["data"]
    assert data["abuseConfidenceScore"] == 90
    assert data["isPublic"] is True
    assert data["ipVersion"] == 4
    assert ok.headers["X-RateLimit-Remaining"] == "1"
    assert key_in_query.status_code == 200
    assert key_in_query.json()["data"]["ipAddress"] == "1.1.1.1"
    assert spent.status_code == 429
    assert spent.headers["X-RateLimit-Remaining"] == "0"
    assert int(spent.headers["Retry-After"]) >= 1
    assert int(spent.headers["X-RateLimit-Reset"]) == int(double.reset_at.timestamp())
    assert "Daily rate limit of 2 requests" in spent.json()["errors"][0]["detail"]
    assert no_key.status_code == 401
    assert no_key.json()["errors"][0]["status"] == 401
    assert "Authentication failed" in no_key.json()["errors"][0]["detail"]
    assert bad_ip.status_code == 422
    assert bad_ip.json()["errors"][0]["source"] == {"parameter": "ipAddress"}
    assert stats["answered"] == 2


def test_double_scores_are_deterministic() -> None:
    sample = public_ips(200, prefix="81.2")
    scores = []
    for _ in range(2):
        with serve_abuseipdb_double() as url, httpx.Client(headers={"Key": DEFAULT_KEY}) as http:
            answers = [
                http.get(f"{url}/check", params={"ipAddress": ip}).json()["data"] for ip in sample[:10]
            ]
        scores.append([answer["abuseConfidenceScore"] for answer in answers])
    assert scores[0] == scores[1]
    clean = sum(hashed_answer(ip).score == 0 for ip in sample)
    assert 80 <= clean <= 160  # about 60 % clean
