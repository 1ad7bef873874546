"""Shared fixtures of the federation tests: a migrated database of the module's own, hub settings,
the hub app in-process (lifespan run, httpx over ASGI), API tokens, and helpers that declare a
cluster, make a bootstrap token and register a spoke through the real routes.

Override ``hub_settings`` in a test module to change thresholds (it is a plain fixture: define one
of the same name that calls :func:`make_hub_settings` with other values).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_common.testing.plugin import scratch_database
from qcdr_federation.app import create_app
from qcdr_federation.db import VERSION_TABLE, upgrade
from qcdr_federation.settings import FederationSettings

WRITE = "federation-write-token"
READ = "federation-read-token"
HUB_URL = "http://hub.test"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


WRITE_HEADERS = bearer(WRITE)
READ_HEADERS = bearer(READ)


def api_auth() -> ApiAuthSettings:
    """A read+write token (``WRITE``) and a read-only one (``READ``); nothing from the environment."""
    return ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ))


def make_settings(
    database_url: str, redis_url: str, redis_prefix: str, *, role: FederationRole, **overrides: Any
) -> FederationSettings:
    values: dict[str, Any] = {
        "role": role,
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "outbox_poll_s": 0.02,
        "log_format": "console",
        # every request checks its credential in the database (tests of the cache turn it on)
        "credential_cache_s": 0.0,
    }
    values.update(overrides)
    return FederationSettings(_env_file=None, **values)


def make_hub_settings(
    database_url: str, redis_url: str, redis_prefix: str, **overrides: Any
) -> FederationSettings:
    overrides.setdefault("cluster_id", "hub")
    return make_settings(database_url, redis_url, redis_prefix, role=FederationRole.HUB, **overrides)


@pytest.fixture(scope="module")
def federation_database_url(base_database_url: str) -> Iterator[str]:
    """A database of this module's own, migrated to head (the app commits for real)."""
    with scratch_database(base_database_url, "qcdr_federation") as url:
        upgrade(url, "head")
        yield url


async def truncate_federation_tables(database_url: str) -> None:
    """Empty every table the migrations made (whoever's they are), identities restarted."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        names = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> $1",
            VERSION_TABLE,
        )
        if names:
            tables = ", ".join(f'"{r["tablename"]}"' for r in names)
            await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@pytest.fixture
async def federation_db(federation_database_url: str) -> str:
    """The module's database, emptied before the test (so tests of one module do not see each other)."""
    await truncate_federation_tables(federation_database_url)
    return federation_database_url


@pytest.fixture
def hub_settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    return make_hub_settings(federation_db, redis_url, redis_prefix)


@pytest.fixture
async def hub_app(hub_settings: FederationSettings) -> AsyncIterator[FastAPI]:
    """The hub app with its lifespan running (engine, Redis, relay, health sweep, policies)."""
    app = create_app(hub_settings, auth=api_auth())
    # the app itself (not the manager's wrapper): its lifespan keeps everything on app.state
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        yield app


def client_for(app: Any, base_url: str = HUB_URL) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("10.1.2.3", 40000))
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30)


@pytest.fixture
async def hub_client(hub_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the hub app with no default credentials: pass ``WRITE_HEADERS`` / ``READ_HEADERS``
    for the operator API, or a spoke's ``headers`` for ``/federation/v1``."""
    async with client_for(hub_app) as client:
        yield client


# --------------------------------------------------------------------------- spokes


@dataclass(frozen=True)
class RegisteredSpoke:
    name: str
    cluster_id: str
    credential_id: str
    credential: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.credential)


async def declare_cluster(client: httpx.AsyncClient, name: str, labels: dict[str, str] | None = None) -> Any:
    response = await client.post(
        "/v1/clusters", json={"name": name, "labels": labels or {}}, headers=WRITE_HEADERS
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


async def bootstrap_token(client: httpx.AsyncClient, name: str, ttl_s: float | None = None) -> str:
    body: dict[str, Any] = {} if ttl_s is None else {"ttl_s": ttl_s}
    response = await client.post(f"/v1/clusters/{name}/bootstrap-tokens", json=body, headers=WRITE_HEADERS)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def register_spoke(
    client: httpx.AsyncClient, name: str, labels: dict[str, str] | None = None
) -> RegisteredSpoke:
    """Declare ``name`` with ``labels``, make a bootstrap token and register: the spoke's credential."""
    await declare_cluster(client, name, labels)
    token = await bootstrap_token(client, name)
    response = await client.post(
        "/federation/v1/register", json={"cluster_name": name, "bootstrap_token": token, "version": "test"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return RegisteredSpoke(name, body["cluster_id"], body["credential_id"], body["credential"])
