"""A stand-in for the AbuseIPDB API v2 ``check`` endpoint, for tests and the demo.

``GET /api/v2/check?ipAddress=…&maxAgeInDays=…`` with the key in the ``Key`` header (or the
``key`` query parameter, which AbuseIPDB also accepts). Answers follow AbuseIPDB's shapes:

* 200 ``{"data": {ipAddress, isPublic, ipVersion, isWhitelisted, abuseConfidenceScore, countryCode,
  usageType, isp, domain, hostnames, isTor, totalReports, numDistinctUsers, lastReportedAt}}`` with
  ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` (after this request);
* errors as ``{"errors": [{"detail": …, "status": N}]}``: 401 for a missing or wrong key, 422 for
  a bad ``ipAddress`` or ``maxAgeInDays``, 429 once the daily quota is spent (then also
  ``Retry-After`` = seconds to the reset, ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset`` as
  epoch seconds).

Scores are deterministic per IP (a hash; about 60 % of addresses are clean) unless configured in
``answers``. Knobs: the daily quota, a fixed latency (to observe concurrency), injected faults
(429 without quota, 5xx, slow) by request number or IP. ``GET /__double/stats`` returns the counters.

ASSUMPTIONS (not confirmed AbuseIPDB behaviour): only 200 answers consume quota; the reset is the
next UTC midnight; non-public addresses are answered (score 0, ``isPublic: false``) as the real API
does, but the client never sends them.

Run by hand: ``python -m qcdr_ingest.intel.abuseipdb_double --port 8081 --key demo-abuseipdb-key``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.testing.asgi_server import serve_app

CHECK_PATH = "/api/v2/check"
DEFAULT_KEY = "demo-abuseipdb-key"
DAILY_LIMIT_DETAIL = (
    "Daily rate limit of {limit} requests exceeded for this endpoint. See headers for additional details."
)
AUTH_DETAIL = (
    "Authentication failed. Your API key is either missing, incorrect, or revoked. "
    "Note: The APIv2 key differs from the APIv1 key."
)
_USAGE_TYPES = (
    "Data Center/Web Hosting/Transit",
    "Fixed Line ISP",
    "Mobile ISP",
    "Commercial",
    "University/College/School",
)
_COUNTRIES = ("US", "DE", "NL", "CN", "RU", "BR", "FR", "GB", "IN", "SG")

FaultKind = Literal["429", "500", "502", "503", "slow"]


class IPAnswer(BaseModel):
    """A configured answer for one address (fields left ``None`` come from the hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: int = Field(ge=0, le=100)
    total_reports: int | None = Field(default=None, ge=0)
    usage_type: str | None = None
    country_code: str | None = None
    is_whitelisted: bool = False
    is_tor: bool = False
    last_reported_at: datetime | None = None


class Fault(BaseModel):
    """Injected answer for check requests number ``at`` or every ``every``-th (1-based, counted over
    all check requests), limited to ``ips`` when given; with neither ``at`` nor ``every``, always."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    at: tuple[int, ...] = ()
    every: int | None = Field(default=None, ge=1)
    ips: tuple[str, ...] = ()
    retry_after: str | None = "1"  # for 429/503; None sends none
    delay_s: float = Field(default=1.0, ge=0)  # for "slow"

    def applies(self, request_number: int, ip: str) -> bool:
        if self.ips and ip not in self.ips:
            return False
        if not self.at and self.every is None:
            return True
        return request_number in self.at or (self.every is not None and request_number % self.every == 0)


class AbuseIPDBDoubleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = DEFAULT_KEY
    answers: dict[str, IPAnswer] = Field(default_factory=dict)
    daily_limit: int = Field(default=1000, ge=0)
    remaining: int | None = Field(default=None, ge=0, description="Checks left at start; default the limit.")
    reset_at: datetime | None = Field(default=None, description="Default: the next UTC midnight.")
    latency_s: float = Field(default=0.0, ge=0, description="Added to every check answer.")
    faults: list[Fault] = Field(default_factory=list)


@dataclass(slots=True)
class AbuseIPDBDoubleStats:
    requests: int = 0
    check_requests: int = 0
    answered: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    status: Counter[int] = field(default_factory=Counter)
    per_ip: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "check_requests": self.check_requests,
            "answered": self.answered,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "per_ip": dict(sorted(self.per_ip.items())),
            "faults": dict(sorted(self.faults.items())),
        }


def _error(
    status: int, detail: str, headers: dict[str, str] | None = None, parameter: str | None = None
) -> Response:
    error: dict[str, Any] = {"detail": detail, "status": status}
    if parameter is not None:
        error["source"] = {"parameter": parameter}
    return Response(
        orjson.dumps({"errors": [error]}), status_code=status, media_type="application/json", headers=headers
    )


def _next_utc_midnight() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


def hashed_answer(ip: str) -> IPAnswer:
    """The deterministic answer for an address nobody configured."""
    h = int.from_bytes(hashlib.sha256(ip.encode()).digest()[:8], "big")
    if h % 10 < 6:
        return IPAnswer(
            score=0, total_reports=0, usage_type=_USAGE_TYPES[h % 5], country_code=_COUNTRIES[h % 10]
        )
    score = 1 + (h >> 8) % 100
    return IPAnswer(
        score=score,
        total_reports=1 + (h >> 16) % 500,
        usage_type=_USAGE_TYPES[(h >> 24) % 5],
        country_code=_COUNTRIES[(h >> 28) % 10],
        is_tor=(h >> 32) % 17 == 0,
        last_reported_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=(h >> 36) % 80_000),
    )


class AbuseIPDBDouble:
    """The app plus its state; read ``stats`` (or change ``remaining``) from tests while it serves."""

    def __init__(self, config: AbuseIPDBDoubleConfig | None = None) -> None:
        self.config = config or AbuseIPDBDoubleConfig()
        self.remaining = self.config.daily_limit if self.config.remaining is None else self.config.remaining
        self.reset_at = self.config.reset_at or _next_utc_midnight()
        self.answers = dict(self.config.answers)
        self.stats = AbuseIPDBDoubleStats()
        self.app = self._build_app()

    def set_score(self, ip: str, score: int, **fields: Any) -> None:
        self.answers[ip] = IPAnswer(score=score, **fields)

    def _quota_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.config.daily_limit),
            "X-RateLimit-Remaining": str(self.remaining),
        }

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="AbuseIPDB API double", openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def count(request: Request, call_next: Any) -> Any:
            self.stats.requests += 1
            response = await call_next(request)
            self.stats.status[response.status_code] += 1
            return response

        @app.get(CHECK_PATH)
        async def check(request: Request) -> Response:
            self.stats.check_requests += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                if self.config.latency_s:
                    await asyncio.sleep(self.config.latency_s)
                return await self._check(request, self.stats.check_requests)
            finally:
                self.stats.in_flight -= 1

        @app.get("/__double/stats")
        async def stats() -> Response:
            return Response(orjson.dumps(self.stats.as_dict()), media_type="application/json")

        return app

    async def _check(self, request: Request, number: int) -> Response:
        key = request.headers.get("key") or request.query_params.get("key")
        if key != self.config.api_key:
            return _error(401, AUTH_DETAIL)
        query = request.query_params
        text = query.get("ipAddress", "")
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            return _error(422, "The ip address must be a valid IPv4 or IPv6 address.", parameter="ipAddress")
        try:
            max_age = int(query.get("maxAgeInDays", "30"))
        except ValueError:
            max_age = 0
        if not 1 <= max_age <= 365:
            return _error(422, "The max age in days must be between 1 and 365.", parameter="maxAgeInDays")
        ip = str(address)
        self.stats.per_ip[ip] += 1
        for fault in self.config.faults:
            if fault.applies(number, ip):
                self.stats.faults[fault.kind] += 1
                if fault.kind == "slow":
                    await asyncio.sleep(fault.delay_s)
                    break
                headers = self._quota_headers()
                if fault.retry_after is not None and fault.kind in ("429", "503"):
                    headers["Retry-After"] = fault.retry_after
                detail = "Too Many Requests" if fault.kind == "429" else f"injected {fault.kind}"
                return _error(int(fault.kind), detail, headers)
        if self.remaining <= 0:
            now = datetime.now(UTC)
            wait = max(1, int((self.reset_at - now).total_seconds()))
            headers = self._quota_headers() | {
                "Retry-After": str(wait),
                "X-RateLimit-Reset": str(int(self.reset_at.timestamp())),
            }
            return _error(429, DAILY_LIMIT_DETAIL.format(limit=self.config.daily_limit), headers)
        self.remaining -= 1
        self.stats.answered += 1
        body = {"data": self._data(address, ip)}
        return Response(orjson.dumps(body), media_type="application/json", headers=self._quota_headers())

    def _data(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, ip: str) -> dict[str, Any]:
        public = address.is_global
        if not public and ip not in self.answers:
            answer = IPAnswer(score=0, total_reports=0, usage_type="Reserved")
        else:
            answer = self.answers.get(ip) or hashed_answer(ip)
        hashed = hashed_answer(ip)  # fills what a configured answer leaves out
        reports = (
            answer.total_reports if answer.total_reports is not None else (0 if answer.score == 0 else 1)
        )
        last = answer.last_reported_at or (hashed.last_reported_at or datetime(2026, 1, 1, tzinfo=UTC))
        return {
            "ipAddress": ip,
            "isPublic": public,
            "ipVersion": address.version,
            "isWhitelisted": answer.is_whitelisted,
            "abuseConfidenceScore": answer.score,
            "countryCode": (answer.country_code or hashed.country_code) if public else None,
            "usageType": answer.usage_type or hashed.usage_type,
            "isp": "Double Networks" if public else "",
            "domain": "double.invalid" if public else None,
            "hostnames": [],
            "isTor": answer.is_tor,
            "totalReports": reports,
            "numDistinctUsers": min(reports, 1 + reports // 3),
            "lastReportedAt": last.isoformat() if reports else None,
        }


@contextmanager
def serve_abuseipdb_double(
    config: AbuseIPDBDoubleConfig | AbuseIPDBDouble | None = None, *, startup_timeout_s: float = 10.0
) -> Iterator[str]:
    """Run the double on 127.0.0.1 (a free port) in a thread; yields the API base URL (``…/api/v2``)."""
    double = config if isinstance(config, AbuseIPDBDouble) else AbuseIPDBDouble(config)
    with serve_app(double.app, name="abuseipdb-double", startup_timeout_s=startup_timeout_s) as url:
        yield f"{url}{CHECK_PATH.removesuffix('/check')}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qcdr_ingest.intel.abuseipdb_double", description="Serve the AbuseIPDB API double."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--key", default=DEFAULT_KEY, help="the API key the double accepts")
    parser.add_argument("--daily-limit", type=int, default=1000)
    parser.add_argument(
        "--score", action="append", default=[], metavar="IP=SCORE", help="fixed score (repeatable)"
    )
    args = parser.parse_args(argv)
    answers = {}
    for item in args.score:
        ip, _, score = item.partition("=")
        answers[str(ipaddress.ip_address(ip.strip()))] = IPAnswer(score=int(score))
    double = AbuseIPDBDouble(
        AbuseIPDBDoubleConfig(api_key=args.key, daily_limit=args.daily_limit, answers=answers)
    )
    print(f"AbuseIPDB double on http://{args.host}:{args.port}/api/v2 (key {args.key!r})")
    uvicorn.run(double.app, host=args.host, port=args.port, log_level="warning", ws="none")


if __name__ == "__main__":
    main()
