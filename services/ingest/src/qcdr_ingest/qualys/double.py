"""A stand-in for the Qualys CDR API, for tests, the demo and benchmarks.

Endpoints: ``POST /auth`` (form ``username``, ``password``, ``token=true``; answers **201** with a
raw HS256 JWT carrying ``iat``/``exp``) and ``GET /cdr-api/rest/v1/findings`` (bearer token;
``startAt``/``endAt`` filter on each finding's ``timestamp``, plus ``severity``, ``resourceType``,
``limit`` and the page parameters). Answers are Spring-style pages: ``content``, ``number``,
``size``, ``totalElements``, ``totalPages``, ``first``, ``last``, ``numberOfElements``. Findings are
served newest first (ties in load order). ``GET /__double/stats`` returns the counters.

Knobs (:class:`DoubleConfig`) reproduce what makes a client lose data: a server that ignores
paging, one without page metadata, a per-window cap (items past offset ``window_cap`` are never
returned although ``totalElements`` tells the truth), findings inserted *into the window being
paged* after page N was served, short-lived or revoked tokens, 429/5xx/slow/HTML answers.

ASSUMPTIONS (not confirmed Qualys behaviour; the original never documented them):

* the paging parameters are ``pageNumber``/``pageSize`` (configurable) and ``limit`` is the page
  size when ``pageSize`` is absent; sizes above ``max_page_size`` are clamped;
* ``severity`` filters by exact number (LOW=1 .. CRITICAL=4); ``resourceType`` case-insensitively;
* findings may carry fields beyond those the original read: ``namespace``, ``containerId``,
  ``imageDigest``/``imageSha``, ``clusterName``, ``podLabels``, ``destinationIp``/
  ``destinationPort`` and ``networkInformation.{destinationIp,destinationPort,domain,protocol}``;
* a wrong password answers 401 with a JSON error body; a missing or bad bearer token answers 401.

Run by hand: ``python -m qcdr_ingest.qualys.double --findings examples/findings.json --port 8080``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import jwt
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.testing.asgi_server import serve_app

from qcdr_ingest.qualys.double_store import FindingStore, load_findings

FINDINGS_PATH = "/cdr-api/rest/v1/findings"
_SEVERITY = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}

FaultKind = Literal["429", "500", "502", "503", "slow", "revoke", "html"]


class Fault(BaseModel):
    """Injected answer for findings requests number ``at`` or every ``every``-th (1-based)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    every: int | None = Field(default=None, ge=1)
    at: tuple[int, ...] = ()
    retry_after: str | None = "1"  # for 429/503: delta-seconds or an HTTP date; None sends none
    delay_s: float = Field(default=1.0, ge=0)  # for "slow"

    def applies(self, request_number: int) -> bool:
        return request_number in self.at or (self.every is not None and request_number % self.every == 0)


class InsertBatch(BaseModel):
    """Hold ``count`` findings back; add them to the window being paged once its page ``after_page``
    (1-based) was served and more pages remain, timestamped between that page's oldest item and
    the window's end, i.e. in the part the client has already read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_page: int = Field(default=1, ge=1)
    count: int = Field(ge=1)


class DoubleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    findings: list[Any] | Path = Field(default_factory=list)
    username: str = "demo"
    password: str = "demo-password"  # noqa: S105 - the double's own throwaway credential
    token_lifetime_s: float = Field(default=4 * 3600.0, gt=0)
    page_base: Literal[0, 1] = 0
    page_param: str = "pageNumber"
    size_param: str = "pageSize"
    ignore_paging: bool = False
    omit_page_metadata: bool = False
    max_page_size: int = Field(default=200, ge=1)
    window_cap: int = Field(default=10_000, ge=1)
    insert_during_paging: list[InsertBatch] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    rebase_to_now: bool = False


@dataclass(slots=True)
class DoubleStats:
    requests: int = 0
    auth_requests: int = 0
    auth_failures: int = 0
    tokens_issued: int = 0
    findings_requests: int = 0
    pages_served: int = 0
    rejected_tokens: int = 0
    inserted: int = 0
    status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "auth_requests": self.auth_requests,
            "auth_failures": self.auth_failures,
            "tokens_issued": self.tokens_issued,
            "findings_requests": self.findings_requests,
            "pages_served": self.pages_served,
            "rejected_tokens": self.rejected_tokens,
            "inserted": self.inserted,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "faults": dict(sorted(self.faults.items())),
        }


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _parse_time(value: str | None, default_ms: int) -> int:
    if value is None:
        return default_ms
    return int(datetime.fromisoformat(value).timestamp() * 1000)


class QualysDouble:
    """The app plus its state; read ``stats`` from tests while it serves."""

    def __init__(self, config: DoubleConfig) -> None:
        self.config = config
        items = load_findings(config.findings) if isinstance(config.findings, Path) else config.findings
        self.store = FindingStore(items, rebase_to=datetime.now(UTC) if config.rebase_to_now else None)
        self._held = [self.store.take(batch.count) for batch in config.insert_during_paging]
        self._pending = list(zip(config.insert_during_paging, self._held, strict=True))
        self.stats = DoubleStats()
        self._secret = secrets.token_hex(32)
        self._generation = 0
        self.app = self._build_app()

    @property
    def total(self) -> int:
        """Findings in the dataset once every held-back batch is inserted."""
        return len(self.store) + sum(len(items) for _, items in self._pending)

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far."""
        self._generation += 1

    def _issue_token(self, username: str) -> str:
        now = time.time()
        self.stats.tokens_issued += 1
        claims = {
            "sub": username,
            "iat": now,
            "exp": now + self.config.token_lifetime_s,
            "gen": self._generation,
            "jti": str(self.stats.tokens_issued),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def _token_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            # PyJWT truncates ``exp`` to whole seconds; tests use sub-second lifetimes, so check it here.
            claims = jwt.decode(
                token.strip(), self._secret, algorithms=["HS256"], options={"verify_exp": False}
            )
        except jwt.PyJWTError:
            return False
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or time.time() >= exp:
            return False
        return bool(claims.get("gen") == self._generation)

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Qualys CDR API double", openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def count(request: Request, call_next: Any) -> Any:
            self.stats.requests += 1
            response = await call_next(request)
            self.stats.status[response.status_code] += 1
            return response

        @app.post("/auth")
        async def auth(request: Request) -> Response:
            self.stats.auth_requests += 1
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
            if not form.get("username") or not form.get("password"):
                return _json({"error": "username and password are required"}, 400)
            if form["username"] != self.config.username or form["password"] != self.config.password:
                self.stats.auth_failures += 1
                return _json({"error": "Bad credentials"}, 401)
            return PlainTextResponse(self._issue_token(form["username"]), status_code=201)

        @app.get(FINDINGS_PATH)
        async def findings(request: Request) -> Response:
            self.stats.findings_requests += 1
            number = self.stats.findings_requests
            for fault in self.config.faults:
                if fault.applies(number):
                    answer = await self._fault(fault)
                    if answer is not None:
                        return answer
                    break
            if not self._token_ok(request):
                self.stats.rejected_tokens += 1
                return _json({"error": "invalid or expired token"}, 401)
            try:
                return self._page(request)
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)

        @app.get("/__double/stats")
        async def stats() -> Response:
            return _json(self.stats.as_dict() | {"findings": len(self.store), "total": self.total})

        return app

    async def _fault(self, fault: Fault) -> Response | None:
        self.stats.faults[fault.kind] += 1
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return None
        if fault.kind == "revoke":
            self.revoke_tokens()
            return None
        if fault.kind == "html":
            return Response("<html><body>Maintenance</body></html>", 200, media_type="text/html")
        headers = (
            {"Retry-After": fault.retry_after} if fault.retry_after and fault.kind in ("429", "503") else None
        )
        return _json({"error": f"injected {fault.kind}"}, int(fault.kind), headers)

    def _page(self, request: Request) -> Response:
        cfg = self.config
        q = request.query_params
        end_ms = _parse_time(q.get("endAt"), 2**53)
        start_ms = _parse_time(q.get("startAt"), 0)
        severity: int | None = None
        if q.get("severity"):
            text = q["severity"].strip()
            severity = int(text) if text.isascii() and text.isdigit() else _SEVERITY.get(text.upper())
            if severity is None:
                raise ValueError(f"bad severity {text!r}")
        size_text = q.get(cfg.size_param) or q.get("limit") or str(cfg.max_page_size)
        size = min(max(int(size_text), 1), cfg.max_page_size)
        requested = max(int(q.get(cfg.page_param) or cfg.page_base), cfg.page_base)
        page = cfg.page_base if cfg.ignore_paging else requested
        items = self.store.query(start_ms, end_ms, severity, q.get("resourceType") or None)
        offset = (page - cfg.page_base) * size
        content = items[offset : min(offset + size, cfg.window_cap)] if offset < cfg.window_cap else []
        self.stats.pages_served += 1
        total = len(items)
        if content and offset + len(content) < total:
            self._maybe_insert(requested - cfg.page_base + 1, content[-1], end_ms)
        if cfg.omit_page_metadata:
            return _json({"content": content})
        total_pages = math.ceil(total / size)
        return _json(
            {
                "content": content,
                "number": page,
                "size": size,
                "totalElements": total,
                "totalPages": total_pages,
                "first": page == cfg.page_base,
                "last": page - cfg.page_base >= total_pages - 1,
                "numberOfElements": len(content),
                "empty": not content,
            }
        )

    def _maybe_insert(self, ordinal: int, last_served: Any, end_ms: int) -> None:
        for index, (batch, items) in enumerate(self._pending):
            if batch.after_page == ordinal:
                oldest = self.store.time_of(last_served)
                newest = min(end_ms, int(time.time() * 1000) + 86_400_000)
                self.store.insert(items, newest_ms=newest, oldest_ms=oldest if oldest is not None else newest)
                self.stats.inserted += len(items)
                del self._pending[index]
                return


@contextmanager
def serve_double(config: DoubleConfig | QualysDouble, *, startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Run the double with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    double = config if isinstance(config, QualysDouble) else QualysDouble(config)
    with serve_app(double.app, name="qualys-double", startup_timeout_s=startup_timeout_s, fast=True) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qcdr_ingest.qualys.double", description="Serve the Qualys CDR API double."
    )
    parser.add_argument("--findings", type=Path, required=True, help="JSON array or JSON Lines file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--token-lifetime", type=float, default=4 * 3600.0, help="seconds")
    parser.add_argument("--page-base", type=int, choices=(0, 1), default=0)
    parser.add_argument("--max-page-size", type=int, default=200)
    parser.add_argument("--window-cap", type=int, default=10_000)
    parser.add_argument("--ignore-paging", action="store_true")
    parser.add_argument("--omit-page-metadata", action="store_true")
    parser.add_argument("--rebase-to-now", action="store_true", help="shift so the newest finding is now")
    args = parser.parse_args(argv)
    config = DoubleConfig(
        findings=args.findings,
        username=args.username,
        password=args.password,
        token_lifetime_s=args.token_lifetime,
        page_base=args.page_base,
        max_page_size=args.max_page_size,
        window_cap=args.window_cap,
        ignore_paging=args.ignore_paging,
        omit_page_metadata=args.omit_page_metadata,
        rebase_to_now=args.rebase_to_now,
    )
    double = QualysDouble(config)
    print(f"Qualys CDR API double: {len(double.store)} findings on http://{args.host}:{args.port}")
    uvicorn.run(double.app, host=args.host, port=args.port, log_level="info", ws="none", lifespan="off")


if __name__ == "__main__":
    main()
