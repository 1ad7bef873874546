"""A receiver for qcdr's generic webhook sink, and ``HttpSinkServer``: what every HTTP sink server
here shares (recording, unique keys, programmable faults, serving on 127.0.0.1).

Every server has the same small API, for sink tests, fault tests and ``bench/outputs.py``::

    server = WebhookServer(secret="s3cret")
    with server.serve() as url:             # the endpoint URL the sink posts to
        server.fail_next(3, status=429, retry_after=1)  # the next 3 requests: 429 + Retry-After
        server.hang_next(1, seconds=2.0)    # then one read, processed, answered 2 s late
        ...
    server.received      # accepted requests (parsed body + lower-case headers), in order
    server.unique_keys   # their idempotency / delivery keys (duplicates = len(received) - len(keys))
    server.attempts      # every request: (status, key, fault)

A failed request (``fail_next``) is read but not processed and not recorded in ``received``. A hung
request (``hang_next``) is processed normally (recorded when accepted, as the real service would
have done) and answered only after ``seconds``: past the client's timeout, its outcome is unknown.

The webhook receiver checks what a careful receiver checks: ``POST`` to its path, ``Content-Type:
application/json``, a JSON object with the documented fields, ``X-Qcdr-Delivery`` equal to the
body's ``delivery_id``, and with a ``secret`` the ``X-Qcdr-Signature`` (``sha256=`` + hex HMAC-SHA256
of ``"<X-Qcdr-Timestamp>.<raw body>"``) with the timestamp within ``tolerance_s`` of its clock (so a
captured request cannot be replayed later). Answers: 200 ``{"ok": true}``; 400 bad JSON or fields;
401 bad signature, stale timestamp or missing ``required_headers``; 404 other paths; 405 other
methods; 415 another content type. A repeated delivery id is answered 200 again (receivers must be
idempotent) and counted once in ``unique_keys``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qcdr_common.testing.asgi_server import serve_app

INVALID_JSON: Any = object()  # ``Incoming.json`` when the body is not JSON


@dataclass(frozen=True)
class Incoming:
    """One request as a server's protocol check sees it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    raw: bytes
    json: Any  # parsed body, or INVALID_JSON

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Answer:
    """What the protocol check decided; 2xx means accepted (recorded in ``received``)."""

    status: int
    content: bytes | str = b""
    media_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)  # server-specific facts for tests

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any  # parsed JSON (None when the server was made with record_bodies=False)
    raw: bytes
    key: str | None
    meta: Mapping[str, Any]


@dataclass(frozen=True)
class Attempt:
    status: int
    key: str | None
    fault: str | None  # "fail", "hang" or None


@dataclass(frozen=True)
class _Fail:
    status: int
    retry_after: str | None
    content: bytes | str | None


@dataclass(frozen=True)
class _Hang:
    seconds: float


class HttpSinkServer:
    """Base of the HTTP sink servers: subclasses implement ``check`` (the protocol), ``key_of`` and
    ``error_body`` (the vendor's body for an injected failure), and set ``path``."""

    name: ClassVar[str] = "sink"
    path: str = "/"
    query: str = ""

    def __init__(self, *, record_bodies: bool = True) -> None:
        self.record_bodies = record_bodies
        self.base_url = ""
        self._lock = threading.Lock()
        self._faults: deque[_Fail | _Hang] = deque()
        self._received: list[Received] = []
        self._attempts: list[Attempt] = []
        self._keys: set[str] = set()
        self.app = Starlette(
            routes=[Route("/{rest:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    # ------------------------------------------------------------------ the API tests use

    @property
    def url(self) -> str:
        """The endpoint a sink is configured with (valid once ``serve`` started)."""
        return f"{self.base_url}{self.path}" + (f"?{self.query}" if self.query else "")

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | str | None = None,
        body: bytes | str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After`` when given) without
        processing them; queued after any faults already queued."""
        value = None if retry_after is None else str(retry_after)
        if isinstance(retry_after, float | int):
            value = str(math.ceil(retry_after))
        with self._lock:
            self._faults.extend(_Fail(status, value, body) for _ in range(n))

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Process the next ``n`` requests normally but answer each only after ``seconds``."""
        with self._lock:
            self._faults.extend(_Hang(seconds) for _ in range(n))

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def unique_keys(self) -> set[str]:
        with self._lock:
            return set(self._keys)

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def accepted(self) -> int:
        with self._lock:
            return sum(1 for a in self._attempts if 200 <= a.status < 300)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._received.clear()
            self._attempts.clear()
            self._keys.clear()

    @contextmanager
    def serve(self, *, fast: bool = False) -> Iterator[str]:
        """Serve on 127.0.0.1 until the block ends; yields ``url``. ``fast`` is for benchmarks."""
        with serve_app(self.app, name=f"{self.name}-test-server", fast=fast) as base:
            self.base_url = base
            yield self.url

    # ------------------------------------------------------------------ for subclasses

    def check(self, request: Incoming) -> Answer:
        raise NotImplementedError

    def key_of(self, request: Incoming) -> str | None:
        return None

    def error_body(self, status: int) -> tuple[bytes | str, str]:
        return f"error {status}", "text/plain"

    # ------------------------------------------------------------------ the handler

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            parsed: Any = orjson.loads(raw) if raw else INVALID_JSON
        except orjson.JSONDecodeError:
            parsed = INVALID_JSON
        incoming = Incoming(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            json=parsed,
        )
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        try:
            key = self.key_of(incoming)
        except (KeyError, TypeError, AttributeError, IndexError):
            key = None
        if isinstance(fault, _Fail):
            content, media_type = self.error_body(fault.status)
            headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
            with self._lock:
                self._attempts.append(Attempt(fault.status, key, "fail"))
            body = fault.content if fault.content is not None else content
            return Response(body, status_code=fault.status, media_type=media_type, headers=headers)
        answer = self.check(incoming)
        with self._lock:
            self._attempts.append(Attempt(answer.status, key, "hang" if fault else None))
            if answer.accepted:
                self._received.append(
                    Received(
                        method=incoming.method,
                        path=incoming.path,
                        query=incoming.query,
                        headers=incoming.headers,
                        body=parsed if self.record_bodies else None,
                        raw=raw if self.record_bodies else b"",
                        key=key,
                        meta=answer.meta,
                    )
                )
                if key is not None:
                    self._keys.add(key)
        if isinstance(fault, _Hang):
            await asyncio.sleep(fault.seconds)
        return Response(
            answer.content, status_code=answer.status, media_type=answer.media_type, headers=answer.headers
        )


# ---------------------------------------------------------------------- the generic webhook receiver

WEBHOOK_FIELDS = (
    "delivery_id",
    "kind",
    "group_key",
    "count",
    "sink",
    "cluster_id",
    "first_seen",
    "last_seen",
    "finding",
    "finding_ids",
    "link",
)


class WebhookServer(HttpSinkServer):
    """Receives qcdr's generic webhook; see the module docstring for what it checks."""

    name = "webhook"

    def __init__(
        self,
        *,
        secret: str | None = None,
        tolerance_s: float = 300.0,
        required_headers: Mapping[str, str] | None = None,
        path: str = "/hooks/qcdr",
        clock: Callable[[], float] = time.time,
        record_bodies: bool = True,
    ) -> None:
        super().__init__(record_bodies=record_bodies)
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.path = path
        self.clock = clock

    def key_of(self, request: Incoming) -> str | None:
        return request.headers.get("x-qcdr-delivery")

    def error_body(self, status: int) -> tuple[bytes | str, str]:
        return orjson.dumps({"ok": False, "error": f"injected {status}"}), "application/json"

    @staticmethod
    def _no(status: int, error: str) -> Answer:
        return Answer(status, orjson.dumps({"ok": False, "error": error}), "application/json")

    def check(self, request: Incoming) -> Answer:
        if request.path != self.path:
            return self._no(404, "not found")
        if request.method != "POST":
            return self._no(405, "method not allowed")
        if request.content_type != "application/json":
            return self._no(415, "content type must be application/json")
        for name, value in self.required_headers.items():
            if not hmac.compare_digest(request.headers.get(name, ""), value):
                return self._no(401, f"missing or wrong {name} header")
        if self.secret is not None:
            problem = self._signature_problem(request, self.secret)
            if problem:
                return self._no(401, problem)
        body = request.json
        if not isinstance(body, dict):
            return self._no(400, "body must be a JSON object")
        missing = [f for f in WEBHOOK_FIELDS if f not in body]
        if missing:
            return self._no(400, f"missing fields: {', '.join(missing)}")
        if body["delivery_id"] != request.headers.get("x-qcdr-delivery"):
            return self._no(400, "X-Qcdr-Delivery does not match delivery_id")
        if not isinstance(body["finding"], dict) or "id" not in body["finding"]:
            return self._no(400, "finding must be an object with an id")
        if not isinstance(body["count"], int) or body["count"] < 1:
            return self._no(400, "count must be a positive integer")
        return Answer(200, orjson.dumps({"ok": True}), "application/json")

    def _signature_problem(self, request: Incoming, secret: str) -> str | None:
        stamp = request.headers.get("x-qcdr-timestamp", "")
        signature = request.headers.get("x-qcdr-signature", "")
        if not stamp.isdigit():
            return "missing or malformed X-Qcdr-Timestamp"
        if abs(self.clock() - int(stamp)) > self.tolerance_s:
            return "timestamp outside the tolerance window"
        expected = hmac.new(secret.encode(), stamp.encode() + b"." + request.raw, hashlib.sha256)
        if not hmac.compare_digest(signature, "sha256=" + expected.hexdigest()):
            return "signature mismatch"
        return None
