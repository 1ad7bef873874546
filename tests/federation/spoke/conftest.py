"""Fixtures of the spoke tests: the spoke's own migrated database (apart from the hub's), spoke
settings, the real hub app served on 127.0.0.1 (restartable on the same port, to cut the spoke
off and bring the hub back), and helpers to read the spoke's streams."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_common.db import make_engine
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.names import stream_key
from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.plugin import scratch_database
from qcdr_federation.app import create_app
from qcdr_federation.db import VERSION_TABLE, upgrade
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke.agent import run_agent
from qcdr_federation.spoke.runtime import AgentState
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.conftest import api_auth, make_settings

SPOKE_DB_TABLES_KEEP = {VERSION_TABLE}


@pytest.fixture(scope="module")
def spoke_database_url(base_database_url: str) -> Iterator[str]:
    """The spoke cluster's database (migrated; apart from the hub's)."""
    with scratch_database(base_database_url, "qcdr_spoke") as url:
        upgrade(url, "head")
        yield url


async def truncate_all(database_url: str) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        names = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> $1", VERSION_TABLE
        )
        if names:
            tables = ", ".join(f'"{r["tablename"]}"' for r in names)
            await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await connection.execute("DROP VIEW IF EXISTS analysis_shared_profiles")
        await connection.execute("DROP TABLE IF EXISTS test_shared_profiles")
    finally:
        await connection.close()


@pytest.fixture
async def spoke_db(spoke_database_url: str) -> str:
    await truncate_all(spoke_database_url)
    return spoke_database_url


@pytest.fixture
async def spoke_engine(spoke_db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(spoke_db)
    yield engine
    await engine.dispose()


@pytest.fixture
def spoke_prefix(redis_prefix: str) -> str:
    """The spoke stack's key prefix (under the test's, so the Redis fixture cleans it up)."""
    return f"{redis_prefix}-spoke"


def make_spoke_settings(
    database_url: str, redis_url: str, prefix: str, hub_url: str, name: str = "spoke-a", **overrides: Any
) -> FederationSettings:
    values: dict[str, Any] = {
        "hub_url": hub_url,
        "cluster_id": name,
        "cluster_name": name,
        "retry_max_s": 0.3,
        "long_poll_max_s": 5.0,
        "http_timeout_s": 10.0,
        "baseline_sync_s": 0.3,
        "stream_block_ms": 50,
        "response_url": "http://127.0.0.1:9",  # nothing listens: the response API is down
    }
    values.update(overrides)
    return make_settings(database_url, redis_url, prefix, role=FederationRole.SPOKE, **values)


async def read_stream(redis: Redis, prefix: str, stream: str) -> list[Envelope]:
    entries = await redis.xrange(stream_key(prefix, stream))
    return [Envelope.from_fields(fields) for _, fields in entries or [] if fields]  # type: ignore[arg-type]


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = 30.0, every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value after ``within`` seconds.

    30 s by default: in a fresh-clone CI run the whole machine stalled for 7 s (Redis and the event
    loop both late) and a spoke's heartbeat after it missed a 10 s bound. A passing check returns
    as soon as it holds, so only a failure waits that long."""
    deadline = time.monotonic() + within
    value: Any = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {within} s (last value: {value!r})")


# --------------------------------------------------------------------------- the hub on 127.0.0.1


class HubServer:
    """The real hub app served by uvicorn in a thread, stoppable and restartable on one port (a
    stopped hub refuses connections, as a hub that went away does)."""

    def __init__(self, settings: FederationSettings) -> None:
        self.settings = settings
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.app: FastAPI | None = None

    def start(self) -> None:
        assert self._server is None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.app = create_app(self.settings, auth=api_auth())
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="on",
                ws="none",
                loop="asyncio",
                http="h11",
                timeout_graceful_shutdown=1,
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hub", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hub did not start")
            time.sleep(0.01)
        self._server, self._thread, self._sock = server, thread, sock

    def stop(self) -> None:
        if self._server is None:
            return
        # A graceful exit, as on SIGTERM: the app's lifespan stops its loops and disposes its
        # engine. (force_exit skips the lifespan: the loop then closed under background loops
        # holding database connections, which the garbage collector found in a later test.)
        # Long polls held open are cancelled after timeout_graceful_shutdown (1 s).
        self._server.should_exit = True
        assert self._thread is not None
        assert self._sock is not None
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "the hub did not stop within 20 s"
        self._sock.close()
        self._server = self._thread = self._sock = None


@pytest.fixture
def hub_server(hub_settings: FederationSettings) -> Iterator[HubServer]:
    server = HubServer(hub_settings)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- running the agent


@asynccontextmanager
async def running_agent(
    settings: FederationSettings, engine: AsyncEngine, redis: Redis, **kwargs: Any
) -> AsyncIterator[AgentState]:
    """``run_agent`` in a task for the block's length; its in-memory state is yielded."""
    state = AgentState.from_settings(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(settings, engine, redis, stop, state=state, **kwargs))
    try:
        yield state
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


# --------------------------------------------------------------------------- the spoke's response API


class FakeResponseApi:
    """The response API's action routes as the spoke uses them (same paths, bodies and shapes):
    ``GET /v1/actions?state=`` (a page of ActionRead) and ``POST /v1/actions/{id}/{verb}``."""

    TOKEN = "response-token-0123456789"

    def __init__(self) -> None:
        self.actions: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.app = FastAPI()
        self.app.add_api_route("/v1/actions", self.list_actions, methods=["GET"])
        self.app.add_api_route("/v1/actions/{action_id}/{verb}", self.decide, methods=["POST"])

    def add(self, action_id: int, state: str = "pending", **extra: Any) -> None:
        now = datetime.now(UTC).isoformat()
        self.actions[action_id] = {
            "id": action_id,
            "action": "kill_process",
            "state": state,
            "target": {"namespace": "web", "pod": f"pod-{action_id}"},
            "finding_id": f"f-{action_id}",
            "reason": "chain",
            "requested_by": "playbook:contain",
            "created_at": now,
            "lease_expires_at": None,
            **extra,
        }

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.TOKEN}"

    async def list_actions(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"status": 401, "reason": "missing_token"}, status_code=401)
        state = request.query_params.get("state")
        items = [a for a in self.actions.values() if state is None or a["state"] == state]
        return JSONResponse({"items": items, "next_cursor": None})

    async def decide(self, action_id: str, verb: str, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"status": 401, "reason": "missing_token"}, status_code=401)
        body = await request.json() if await request.body() else None
        self.calls.append((f"{verb}:{action_id}", body))
        action = self.actions.get(int(action_id)) if action_id.isdigit() else None
        if action is None:
            return JSONResponse({"status": 404, "reason": "action_not_found"}, status_code=404)
        moves = {
            "approve": ("pending", "queued"),
            "reject": ("pending", "rejected"),
            "undo": ("succeeded", "releasing"),
        }
        if verb in moves:
            before, after = moves[verb]
            if action["state"] != before:
                return JSONResponse({"status": 409, "reason": "illegal_transition"}, status_code=409)
            action["state"] = after
            action["decision_note"] = (body or {}).get("note")
        elif verb == "renew":
            action["lease_seconds"] = (body or {}).get("lease")
        else:
            return JSONResponse({"status": 404, "reason": "not_found"}, status_code=404)
        return JSONResponse(action)


@pytest.fixture
def response_api() -> Iterator[tuple[FakeResponseApi, str]]:
    fake = FakeResponseApi()
    with serve_app(fake.app, name="fake-response-api") as url:
        yield fake, url


SHARED_PROFILES_VIEW = """
CREATE TABLE IF NOT EXISTS test_shared_profiles (
    profile_key text PRIMARY KEY, generation bigint NOT NULL, ready_at timestamptz,
    data jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE OR REPLACE VIEW analysis_shared_profiles AS
    SELECT profile_key, generation, ready_at, data, updated_at FROM test_shared_profiles;
"""


async def create_shared_profiles_view(database_url: str) -> None:
    """Analysis's read-only view, as its migration publishes it (same columns), over a test table."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(SHARED_PROFILES_VIEW)
    finally:
        await connection.close()
