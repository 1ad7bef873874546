"""Fixtures of the federated-policy tests: an app with only the policy routers (the spoke's
credential check replaced by a header naming the cluster, looked up in the database like the real
one does), clusters written straight into ``federation_clusters``, and policy bodies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from qcdr_common.api.errors import ApiError
from qcdr_common.db import make_session_factory
from qcdr_common.service_app import create_service_app
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.policies.lifespan import install_policies
from qcdr_federation.hub.policies.spoke_router import SPOKE_PATHS
from qcdr_federation.hub.spoke_auth import SpokeCaller, spoke_caller
from qcdr_federation.settings import FederationSettings
from sqlalchemy import select

from tests.federation.conftest import HUB_URL, api_auth, make_hub_settings

CLUSTER_HEADER = "X-Test-Cluster"


async def header_caller(request: Request) -> SpokeCaller:
    """Stands in for the credential check: the cluster named by a header, read from the database."""
    name = request.headers.get(CLUSTER_HEADER)
    async with request.app.state.sessions() as session:
        row = (await session.scalars(select(ClusterRow).where(ClusterRow.name == name))).one_or_none()
    if row is None or row.removed_at is not None:
        raise ApiError(401, "unknown test cluster", reason="unknown_credential")
    return SpokeCaller(row.id, row.name, dict(row.labels), f"cred-{row.name}")


def policies_app(settings: FederationSettings, *, recheck_s: float = 30.0) -> FastAPI:
    """The policy parts of a hub app; ``recheck_s`` long, so wake-ups are proven to come from the
    notifications and not from the periodic re-check, unless a test wants that."""
    app = create_service_app(
        settings, title="qcdr federation (policies)", auth=api_auth(), public_paths=SPOKE_PATHS
    )
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with outer(app):
            app.state.sessions = make_session_factory(app.state.engine)
            yield

    app.router.lifespan_context = lifespan
    install_policies(app, settings, recheck_s=recheck_s)
    app.dependency_overrides[spoke_caller] = header_caller
    return app


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=HUB_URL, timeout=30) as client:
            yield client


# how long a pull is held at most: a spoke woken by a change answers far sooner, even on a busy
# machine, so a wake-up is told apart from the hold running out (and from the 30 s re-check)
HOLD_S = 30.0


@pytest.fixture
def policy_settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    return make_hub_settings(federation_db, redis_url, redis_prefix, long_poll_max_s=HOLD_S)


@pytest.fixture
async def client(policy_settings: FederationSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(policies_app(policy_settings)) as c:
        yield c


# --------------------------------------------------------------------------- clusters


class Clusters:
    """Writes ``federation_clusters`` rows the way hub-core would (declared, labels)."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url.replace("+asyncpg", "")
        self.ids: dict[str, str] = {}

    async def _execute(self, sql: str, *args: Any) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(sql, *args)
        finally:
            await connection.close()

    async def add(self, name: str, labels: dict[str, str] | None = None) -> str:
        cluster_id = f"fc-{uuid.uuid4()}"
        await self._execute(
            "INSERT INTO federation_clusters (id, name, labels, source, heartbeat, health) "
            "VALUES ($1, $2, $3::jsonb, 'api', '{}'::jsonb, 'pending')",
            cluster_id,
            name,
            orjson.dumps(labels or {}).decode(),
        )
        self.ids[name] = cluster_id
        return cluster_id

    async def relabel(self, name: str, labels: dict[str, str]) -> None:
        await self._execute(
            "UPDATE federation_clusters SET labels = $2::jsonb, updated_at = now() WHERE name = $1",
            name,
            orjson.dumps(labels).decode(),
        )

    async def remove(self, name: str) -> None:
        await self._execute("UPDATE federation_clusters SET removed_at = now() WHERE name = $1", name)


@pytest.fixture
def clusters(federation_db: str) -> Clusters:
    return Clusters(federation_db)


def spoke(name: str) -> dict[str, str]:
    return {CLUSTER_HEADER: name}


# --------------------------------------------------------------------------- bodies


def tracing_policy(name: str = "block-ptrace", action: str = "Sigkill") -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {
            "kprobes": [
                {
                    "call": "sys_ptrace",
                    "syscall": True,
                    "args": [{"index": 0, "type": "int"}],
                    "selectors": [{"matchActions": [{"action": action}]}],
                }
            ]
        },
    }


def policy_body(name: str = "no-ptrace", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "template": tracing_policy(),
        "placement": {"cluster_selector": {"match_labels": {"env": "prod"}}},
    }
    body.update(spec)
    return body


MakeBody = Callable[..., dict[str, Any]]
