"""Fixtures for the ingest service tests: the migrated database (emptied per test), the app on
an in-process ASGI transport with its real lifespan, API tokens, and the outbox relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine
from qcdr_common.streams import OutboxRelay
from qcdr_ingest.app import create_app
from qcdr_ingest.db import upgrade
from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.intel.abuseipdb import AbuseIPDBSettings
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.settings import IngestSettings
from redis.asyncio import Redis

WRITE_TOKEN = "ingest-test-write-0123456789abcdef"
READ_TOKEN = "ingest-test-read-0123456789abcdef"
AUTH = ApiAuthSettings(token=SecretStr(WRITE_TOKEN), token_read=SecretStr(READ_TOKEN))
TABLES = (
    "ingest_events",
    "ingest_outbox",
    "ingest_watermarks",
    "intel_indicators",
    "intel_indicator_state",
    "intel_feed_state",
    "intel_reputation",
    "intel_reputation_queue",
    "intel_domains",
)


def plain(url: str) -> str:
    return url.replace("+asyncpg", "")


@pytest.fixture(scope="session")
def ingest_database_url(database_url: str) -> str:
    """This worker's database with the real ingest migrations applied (once per session)."""
    upgrade(database_url)
    return database_url


@pytest.fixture
async def db(ingest_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection, after emptying every ingest table: the service commits for real (its
    own connections, COPY, the relay), so tests start from empty tables instead of rolling back."""
    connection = await asyncpg.connect(plain(ingest_database_url))
    await connection.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def make_ingest_settings(
    db: asyncpg.Connection, ingest_database_url: str, redis_url: str, redis_prefix: str
) -> Callable[..., IngestSettings]:
    def make(**overrides: Any) -> IngestSettings:
        values: dict[str, Any] = {
            "database_url": ingest_database_url,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "cluster_id": "test-cluster",
            "background_workers": False,  # tests run the relay themselves
            "gc_tuning": False,
            "log_level": "WARNING",
        }
        unknown = set(overrides) - set(IngestSettings.model_fields)
        assert not unknown, f"not an IngestSettings field: {unknown}"  # extra="ignore" would hide it
        values.update(overrides)
        return IngestSettings(**values)

    return make


Client = httpx.AsyncClient
MakeClient = Callable[..., AbstractAsyncContextManager[tuple[Client, FastAPI]]]


@pytest.fixture
def make_client(make_ingest_settings: Callable[..., IngestSettings]) -> MakeClient:
    @asynccontextmanager
    async def make(
        token: str | None = WRITE_TOKEN,
        qualys: QualysSettings | None = None,
        abuseipdb: AbuseIPDBSettings | None = None,
        **overrides: Any,
    ) -> AsyncIterator[tuple[Client, FastAPI]]:
        # no key unless a test gives one: a developer's real ABUSEIPDB_API_KEY never reaches a test
        abuseipdb = abuseipdb or AbuseIPDBSettings(_env_file=None, api_key=None)
        app = create_app(
            make_ingest_settings(**overrides),
            qualys=qualys or QualysSettings(),
            auth=AUTH,
            abuseipdb=abuseipdb,
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://ingest.test", headers=headers
            ) as client,
        ):
            yield client, app

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> AsyncIterator[Client]:
    async with make_client() as (client, _):
        yield client


@pytest.fixture
async def relay(
    ingest_database_url: str, redis_client: Redis, redis_prefix: str
) -> AsyncIterator[OutboxRelay]:
    engine = make_engine(ingest_database_url)
    try:
        yield OutboxRelay(engine, redis_client, OUTBOX, prefix=redis_prefix, maxlen=100_000)
    finally:
        await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Poll ``check`` until it holds (background workers publish asynchronously)."""
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110 - the condition lives in Redis/PostgreSQL
            await asyncio.sleep(0.02)
