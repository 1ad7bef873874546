"""Fixtures for the intel tests: a migrated database, a fake clock, a local feed server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from qcdr_common.db import make_engine
from qcdr_common.testing.asgi_server import serve_app
from qcdr_ingest.db import upgrade
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------- database


@pytest.fixture(scope="session")
def intel_database_url(database_url: str) -> str:
    """This worker's database with the real ingest migrations applied (once per session)."""
    upgrade(database_url)
    return database_url


@pytest.fixture
async def intel_sessions(intel_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions inside one outer transaction rolled back at the end: the stores' commits become
    savepoint releases, so every test leaves the shared database as it found it."""
    engine = make_engine(intel_database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            outer = await connection.begin()
            yield async_sessionmaker(
                bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            await outer.rollback()
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------- time


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---------------------------------------------------------------------- the feed server

LAST_MODIFIED = datetime(2026, 2, 28, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class FeedServer:
    """A feed host on 127.0.0.1 with ETag/Last-Modified and 304s, and endpoints that misbehave.

    ``/corpus/<path>``   a file from ``shared/corpora/threat-intel`` (read at request time)
    ``/mem/<name>``      ``bodies[name]`` (tests change it); ``?validators=lm`` sends Last-Modified only
    ``/status/<code>``   that status;  ``/flaky/<name>?failures=N`` 503 N times, then ``bodies[name]``
    ``failing``          paths that answer 500 until removed
    ``/slow?s=…``        answers after a while (``max_in_flight[group]`` counts overlaps)
    ``/big?n=…``         n bytes with Content-Length;
    ``/big-stream?n=…``  n bytes chunked, no Content-Length;  ``/empty``, ``/comments``
    """

    corpus: Path | None = None
    bodies: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # paths that answer 500 for now
    in_flight: dict[str, int] = field(default_factory=dict)  # per ``/slow?group=``
    max_in_flight: dict[str, int] = field(default_factory=dict)
    url: str = ""

    def requests_to(self, prefix: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.startswith(prefix)]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next):  # type: ignore[no-untyped-def]
            self.seen.append(Seen(request.url.path, dict(request.headers)))
            if request.url.path in self.failing:
                return Response("down for maintenance\n", status_code=500)
            return await call_next(request)

        def conditional(request: Request, body: bytes, *, etag: bool = True) -> Response:
            tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            headers = {"Last-Modified": format_datetime(LAST_MODIFIED, usegmt=True)}
            if etag:
                headers["ETag"] = tag
            inm = request.headers.get("if-none-match")
            ims = request.headers.get("if-modified-since")
            if etag and inm is not None:
                fresh = inm.strip() in (tag, "*")
            elif ims is not None:
                fresh = parsedate_to_datetime(ims) >= LAST_MODIFIED
            else:
                fresh = False
            if fresh:
                return Response(status_code=304, headers=headers)
            return Response(body, media_type="text/plain", headers=headers)

        @app.get("/corpus/{path:path}")
        async def corpus(path: str, request: Request) -> Response:
            if self.corpus is None:
                raise HTTPException(404)
            file = (self.corpus / path).resolve()
            if not file.is_relative_to(self.corpus.resolve()) or not file.is_file():
                raise HTTPException(404)
            return conditional(request, file.read_bytes())

        @app.get("/mem/{name}")
        async def mem(name: str, request: Request, validators: str = "etag") -> Response:
            if name not in self.bodies:
                raise HTTPException(404)
            return conditional(request, self.bodies[name], etag=validators == "etag")

        @app.get("/status/{code}")
        async def status(code: int) -> Response:
            return Response(f"status {code}\n", status_code=code)

        @app.get("/flaky/{name}")
        async def flaky(name: str, request: Request, failures: int = 2) -> Response:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.calls[name] <= failures:
                return Response("try later\n", status_code=503)
            return conditional(request, self.bodies[name])

        @app.get("/slow")
        async def slow(s: float = 1.0, group: str = "") -> Response:
            self.in_flight[group] = self.in_flight.get(group, 0) + 1
            self.max_in_flight[group] = max(self.max_in_flight.get(group, 0), self.in_flight[group])
            try:
                await asyncio.sleep(s)
            finally:
                self.in_flight[group] -= 1
            return Response(b"192.0.2.1\n")

        @app.get("/big")
        async def big(n: int) -> Response:
            return Response(b"1" * n)

        @app.get("/big-stream")
        async def big_stream(n: int) -> StreamingResponse:
            async def chunks() -> AsyncIterator[bytes]:
                left = n
                while left > 0:
                    size = min(left, 4096)
                    left -= size
                    yield b"1" * size

            return StreamingResponse(chunks(), media_type="text/plain")

        @app.get("/empty")
        async def empty() -> Response:
            return Response(b"", media_type="text/plain")

        @app.get("/comments")
        async def comments() -> Response:
            return Response(b"# Feodo Tracker: no active C2 right now\n\n; nothing here\n   \n")

        return app


@pytest.fixture(scope="module")
def _feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    with serve_app(server.app(), name="intel-feed-server") as url:
        server.url = url
        yield server


@pytest.fixture
def feed_server(_feed_server: FeedServer) -> FeedServer:
    """The module's feed server with this test's slate clean."""
    _feed_server.seen.clear()
    _feed_server.bodies.clear()
    _feed_server.calls.clear()
    _feed_server.failing.clear()
    _feed_server.corpus = None
    return _feed_server


@pytest.fixture
def corpus_server(feed_server: FeedServer, shared_path: Path) -> FeedServer:
    """The feed server serving ``shared/corpora/threat-intel`` (skips where shared/ is absent)."""
    corpus = shared_path / "corpora" / "threat-intel"
    if not corpus.is_dir():
        pytest.skip("shared/corpora/threat-intel is absent")
    feed_server.corpus = corpus
    return feed_server


class ResetServer:
    """Accepts a connection, reads the request, and answers with a TCP reset (SO_LINGER 0)."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/reset"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intel-reset-server", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1.0)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def __enter__(self) -> ResetServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture
def reset_server() -> Iterator[ResetServer]:
    with ResetServer() as server:
        yield server


@pytest.fixture
def refused_url() -> str:
    """A URL on a 127.0.0.1 port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.txt"
