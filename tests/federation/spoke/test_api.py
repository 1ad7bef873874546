"""The spoke role inside the federation app: ``install_spoke`` runs the agent in the lifespan (with
the app's outbox relay), ``GET /v1/federation/spoke`` shows where it stands (never the secret) and
``GET /v1/federation`` carries its summary; whatever heartbeat interval the hub tells, the status
route answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import POLICIES_STREAM
from qcdr_federation.app import create_app
from qcdr_federation.settings import MAX_HEARTBEAT_INTERVAL_S, FederationSettings
from qcdr_federation.spoke.agent import build_agent
from qcdr_federation.spoke.client import Credential
from redis.asyncio import Redis

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS, api_auth, bootstrap_token, declare_cluster
from tests.federation.spoke.conftest import (
    FakeResponseApi,
    HubServer,
    create_shared_profiles_view,
    eventually,
    make_spoke_settings,
    read_stream,
)

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]


def policy_body() -> dict[str, Any]:
    return {
        "name": "no-ptrace",
        "template": {
            "apiVersion": "cilium.io/v1alpha1",
            "kind": "TracingPolicyNamespaced",
            "metadata": {"name": "block-ptrace", "namespace": "web"},
            "spec": {"kprobes": [{"call": "sys_ptrace", "syscall": True}]},
        },
        "placement": {"clusters": ["spoke-a"]},
        "enforce": True,
    }


async def test_the_spoke_app_runs_the_agent_and_shows_its_state(
    hub_server: HubServer,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    response_api: tuple[FakeResponseApi, str],
) -> None:
    await create_shared_profiles_view(spoke_db)
    async with httpx.AsyncClient(base_url=hub_server.url, timeout=20) as hub:
        await declare_cluster(hub, "spoke-a", {"env": "prod"})
        token = await bootstrap_token(hub, "spoke-a")
        created = await hub.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
        assert created.status_code == 201, created.text
        policy_id = created.json()["id"]
        settings: FederationSettings = make_spoke_settings(
            spoke_db,
            redis_url,
            spoke_prefix,
            hub_server.url,
            bootstrap_token=SecretStr(token),
            response_url=response_api[1],
            response_token=SecretStr(FakeResponseApi.TOKEN),
        )
        app = create_app(settings, auth=api_auth())
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://spoke.test") as spoke:

                async def holding() -> dict[str, Any] | None:
                    got = await spoke.get("/v1/federation/spoke", headers=READ_HEADERS)
                    assert got.status_code == 200, got.text
                    body: dict[str, Any] = got.json()
                    return body if body["registered"] and body["policies"] else None

                status = await eventually(holding)
                assert status["cluster_name"] == "spoke-a"
                assert status["hub_url"] == hub_server.url
                assert status["cluster_id"]
                assert status["credential_id"]
                held = status["policies"][0]
                assert (held["policy_id"], held["kind"], held["namespace"], held["manifest_name"]) == (
                    policy_id,
                    "TracingPolicyNamespaced",
                    "web",
                    "block-ptrace",
                )
                assert held["enforce"] is True
                assert held["state"] == "pending"
                assert status["hub_up"] is True
                assert status["last_contact_at"]
                # placed through the app's own outbox relay
                placed = await eventually(lambda: read_stream(redis_client, spoke_prefix, POLICIES_STREAM))
                assert placed[0].payload["policy_id"] == policy_id

                # another replica's counters and problems (its own agent, in another pod)
                await _other_replica(spoke_db, {"events_forwarded": 5}, ["events: hub refused a batch"])
                both = (await spoke.get("/v1/federation/spoke", headers=READ_HEADERS)).json()
                assert both["problems"] == ["events: hub refused a batch"]
                assert both["counts"]["replicas"] == 2
                assert both["counts"]["events_forwarded"] >= 5

                info = await spoke.get("/v1/federation", headers=READ_HEADERS)
                assert info.status_code == 200
                assert info.json()["role"] == "spoke"
                assert info.json()["spoke"]["registered"] is True

                assert (await spoke.get("/v1/federation/spoke")).status_code == 401
                # the hub's routes are not mounted on a spoke
                assert (await spoke.get("/v1/clusters", headers=READ_HEADERS)).status_code == 404
                secret = await _stored_credential(spoke_db)
                assert (
                    secret.split(".", 1)[1]
                    not in (await spoke.get("/v1/federation/spoke", headers=READ_HEADERS)).text
                )


async def _stored_credential(database_url: str) -> str:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        value = await connection.fetchval("SELECT credential FROM federation_spoke_state")
    finally:
        await connection.close()
    assert isinstance(value, str)
    return value


async def _other_replica(database_url: str, counts: dict[str, int], problems: list[str]) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "INSERT INTO federation_spoke_replicas (replica_id, counts, problems, seen_at)"
            " VALUES ('pod-b/1/0', $1::jsonb, $2::jsonb, now())",
            json.dumps(counts),
            json.dumps(problems),
        )
    finally:
        await connection.close()


def hub_telling_a_huge_interval(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/heartbeat"):
        ack = {"health": "healthy", "heartbeat_interval_s": 1e15, "policies_etag": "e", "commands_pending": 0}
        return httpx.Response(200, json=ack)
    return httpx.Response(404)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


async def test_the_status_route_answers_whatever_interval_the_hub_told(
    spoke_db: str, redis_url: str, spoke_prefix: str
) -> None:
    """The route lists the replicas seen within three intervals: a huge interval from the hub's
    heartbeat ack overflowed the timedelta, and the route answered 500 until a restart."""
    settings = make_spoke_settings(spoke_db, redis_url, spoke_prefix, "http://hub.test", consume_in_app=False)
    app = create_app(settings, auth=api_auth())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        redis = Redis.from_url(redis_url)
        agent = build_agent(
            settings,
            app.state.engine,
            redis,
            asyncio.Event(),
            state=app.state.spoke_state,
            hub_transport=httpx.MockTransport(hub_telling_a_huge_interval),
            response_transport=httpx.MockTransport(refused),
        )
        agent.client.credential = Credential("cid", SecretStr("cid.secret"))
        try:
            assert await agent.heartbeat.beat_once()
        finally:
            await agent.aclose()
            await redis.aclose()
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://spoke.test") as spoke:
            got = await spoke.get("/v1/federation/spoke", headers=READ_HEADERS)
    assert got.status_code == 200, got.text
    assert got.json()["heartbeat_interval_s"] == MAX_HEARTBEAT_INTERVAL_S
