"""What a spoke and the real hub exchange besides policies: forwarded events (once at the hub even
when an answer is lost after the hub stored them) and findings, commands round trip through the
spoke's response API, and baselines from one spoke to another."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import BASELINE_SHARED, BASELINES_STREAM
from qcdr_common.db import make_engine
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.plugin import scratch_database
from qcdr_federation.db import upgrade
from qcdr_federation.settings import FederationSettings
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.conftest import WRITE_HEADERS, bootstrap_token, declare_cluster, make_hub_settings
from tests.federation.spoke.conftest import (
    FakeResponseApi,
    HubServer,
    create_shared_profiles_view,
    eventually,
    make_spoke_settings,
    read_stream,
    running_agent,
)

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]


@pytest.fixture
def hub_settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    return make_hub_settings(
        federation_db,
        redis_url,
        redis_prefix,
        heartbeat_interval_s=0.3,
        health_sweep_s=0.2,
        command_wait_s=10.0,
    )


async def spoke_settings(
    client: httpx.AsyncClient,
    database_url: str,
    redis_url: str,
    prefix: str,
    hub_url: str,
    name: str,
    response_url: str = "http://127.0.0.1:9",
    **kw: Any,
) -> FederationSettings:
    await declare_cluster(client, name, {"env": "prod"})
    token = await bootstrap_token(client, name)
    return make_spoke_settings(
        database_url,
        redis_url,
        prefix,
        hub_url,
        name,
        bootstrap_token=SecretStr(token),
        response_url=response_url,
        response_token=SecretStr(FakeResponseApi.TOKEN),
        **kw,
    )


# --------------------------------------------------------------------------- forwarding


class LoseFirstForwardAnswer(httpx.AsyncBaseTransport):
    """Delivers every request, but throws the hub's answer to the first forward of events away and reports
    a timeout, as a connection that dies after the hub committed would."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lose = (
            request.url.path == "/federation/v1/forward"
            and b'"kind":"events"' in request.content
            and self.lost == 0
        )
        if lose:
            self.lost += 1  # claimed before awaiting: the findings forwarder posts concurrently
        response = await self.inner.handle_async_request(request)
        if lose:
            await response.aread()
            await response.aclose()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def security_event(i: int, severity: str = "high") -> Envelope:
    payload = {
        "id": f"ev-{i}",
        "source": "tetragon",
        "category": "process_exec",
        "severity": severity,
        "event_time": datetime.now(UTC).isoformat(),
        "workload": {
            "cluster": "whatever-the-spoke-says",
            "namespace": "web",
            "image_digest": "sha256:" + "a" * 64,
        },
    }
    return new_envelope(
        "ingest.event_observed", payload, source="ingest", cluster_id="spoke-a", occurred_at=datetime.now(UTC)
    )


def finding(i: int) -> Envelope:
    payload = {
        "id": f"fi-{i}",
        "kind": "attack_technique",
        "detector": "attack_rules",
        "category": "privilege_escalation",
        "severity": "critical",
        "event_time": datetime.now(UTC).isoformat(),
        "evidence_event_ids": [f"ev-{i}"],
    }
    return new_envelope(
        "analysis.finding_raised",
        payload,
        source="analysis",
        cluster_id="spoke-a",
        occurred_at=datetime.now(UTC),
    )


async def test_events_arrive_once_even_when_an_answer_is_lost_and_findings_are_kept(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    redis_prefix: str,
    spoke_prefix: str,
    redis_client: Redis,
    federation_db: str,
) -> None:
    transport = LoseFirstForwardAnswer()
    async with httpx.AsyncClient(base_url=hub_server.url, timeout=20) as client:
        settings = await spoke_settings(
            client,
            spoke_db,
            redis_url,
            spoke_prefix,
            hub_server.url,
            "spoke-a",
            forward_min_severity="medium",
        )
        events = [security_event(i) for i in range(5)] + [security_event(99, "low")]
        await publish(redis_client, stream_key(spoke_prefix, "ingest:events"), events, 10_000)
        await publish(redis_client, stream_key(spoke_prefix, "analysis:findings"), [finding(1)], 10_000)
        async with running_agent(settings, spoke_engine, redis_client, hub_transport=transport) as state:
            await eventually(lambda: _count(state.counts, "events_forwarded", 5))
            await eventually(lambda: _count(state.counts, "findings_forwarded", 1))

            async def at_hub() -> list[Envelope] | None:
                found = await read_stream(redis_client, redis_prefix, "ingest:events")
                return found if len(found) >= 5 else None

            arrived = await eventually(at_hub)
            await asyncio.sleep(0.3)  # a second copy would have been published by now
            arrived = await read_stream(redis_client, redis_prefix, "ingest:events")
        assert transport.lost == 1
        assert sorted(e.payload["id"] for e in arrived) == [f"ev-{i}" for i in range(5)]  # the low one stayed
        assert {e.cluster_id for e in arrived} == {"spoke-a"}
        assert {e.payload["workload"]["cluster"] for e in arrived} == {"spoke-a"}
        assert state.counts["events_filtered"] == 1
        connection = await asyncpg.connect(federation_db.replace("+asyncpg", ""))
        try:
            rows = await connection.fetch("SELECT id FROM federation_findings")
        finally:
            await connection.close()
        assert [r["id"] for r in rows] == ["fi-1"]
        pending = await redis_client.xpending(stream_key(spoke_prefix, "ingest:events"), "federation")
        assert pending["pending"] == 0
    await transport.aclose()


# --------------------------------------------------------------------------- commands


@pytest.fixture
def fake_response() -> Iterator[tuple[FakeResponseApi, str]]:
    fake = FakeResponseApi()
    fake.add(7)
    fake.add(8, state="succeeded", lease_expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    fake.add(9, state="succeeded")  # no lease: not reported
    with serve_app(fake.app, name="fake-response-api") as url:
        yield fake, url


async def test_commands_round_trip_through_the_spokes_response_api(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    fake_response: tuple[FakeResponseApi, str],
) -> None:
    fake, url = fake_response
    async with httpx.AsyncClient(base_url=hub_server.url, timeout=30) as client:
        settings = await spoke_settings(
            client, spoke_db, redis_url, spoke_prefix, hub_server.url, "spoke-a", url
        )
        async with running_agent(settings, spoke_engine, redis_client):

            async def actions() -> list[dict[str, Any]] | None:
                got = await client.get("/v1/clusters/spoke-a/actions", headers=WRITE_HEADERS)
                items: list[dict[str, Any]] = got.json()["items"]
                return items if len(items) == 2 else None

            listed = await eventually(actions)
            assert sorted((a["action_id"], a["state"]) for a in listed) == [
                ("7", "pending"),
                ("8", "succeeded"),
            ]

            base = "/v1/clusters/spoke-a/actions"
            approved = await client.post(
                f"{base}/7/approve", json={"note": "go ahead"}, headers=WRITE_HEADERS
            )
            assert approved.status_code == 200, approved.text
            assert approved.json()["state"] == "queued"
            assert approved.json()["decision_note"] == "go ahead"
            again = await client.post(f"{base}/7/approve", json={"note": "twice"}, headers=WRITE_HEADERS)
            assert (again.status_code, again.json()["reason"]) == (409, "illegal_transition")
            renewed = await client.post(f"{base}/8/renew", json={"lease": 600}, headers=WRITE_HEADERS)
            assert (renewed.status_code, renewed.json()["lease_seconds"]) == (200, 600)
            missing = await client.post(f"{base}/404/reject", headers=WRITE_HEADERS)
            assert missing.status_code == 404
            assert fake.calls == [
                ("approve:7", {"note": "go ahead"}),
                ("approve:7", {"note": "twice"}),
                ("renew:8", {"lease": 600}),
                ("reject:404", {"note": ""}),
            ]


async def test_a_response_api_that_is_down_answers_503(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
) -> None:
    async with httpx.AsyncClient(base_url=hub_server.url, timeout=30) as client:
        settings = await spoke_settings(client, spoke_db, redis_url, spoke_prefix, hub_server.url, "spoke-a")
        async with running_agent(settings, spoke_engine, redis_client) as state:
            await eventually(lambda: _registered_and_beating(client))
            undone = await client.post("/v1/clusters/spoke-a/actions/3/undo", headers=WRITE_HEADERS)
            assert undone.status_code == 503
            assert undone.json()["reason"] == "response_unavailable"
            seen = (await client.get("/v1/clusters/spoke-a", headers=WRITE_HEADERS)).json()
            assert any("response API" in p for p in seen["problems"])
            assert state.counts["commands_run"] == 1


# --------------------------------------------------------------------------- baselines


@pytest.fixture
def second_spoke_db(base_database_url: str) -> Iterator[str]:
    with scratch_database(base_database_url, "qcdr_spoke_b") as url:
        upgrade(url, "head")
        yield url


async def add_profile(database_url: str, key: str, generation: int, data: dict[str, Any]) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "INSERT INTO test_shared_profiles (profile_key, generation, ready_at, data) "
            "VALUES ($1, $2, now(), $3::jsonb) ON CONFLICT (profile_key) "
            "DO UPDATE SET generation = EXCLUDED.generation, data = EXCLUDED.data",
            key,
            generation,
            orjson.dumps(data).decode(),
        )
    finally:
        await connection.close()


async def test_a_baseline_learned_on_one_spoke_reaches_another(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    second_spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
) -> None:
    digest = "sha256:" + "b" * 64
    await create_shared_profiles_view(spoke_db)
    await create_shared_profiles_view(second_spoke_db)
    await add_profile(spoke_db, digest, 3, {"processes": ["/usr/bin/nginx"], "state": "ready"})
    await add_profile(spoke_db, "not-a-digest", 1, {"x": 1})  # never shared
    engine_b = make_engine(second_spoke_db)
    prefix_b = f"{spoke_prefix}-b"
    try:
        async with httpx.AsyncClient(base_url=hub_server.url, timeout=20) as client:
            settings_a = await spoke_settings(
                client, spoke_db, redis_url, spoke_prefix, hub_server.url, "spoke-a"
            )
            settings_b = await spoke_settings(
                client, second_spoke_db, redis_url, prefix_b, hub_server.url, "spoke-b"
            )
            async with (
                running_agent(settings_a, spoke_engine, redis_client) as state_a,
                running_agent(settings_b, engine_b, redis_client),
            ):

                async def shared() -> list[Envelope] | None:
                    found = await read_stream(redis_client, prefix_b, BASELINES_STREAM)
                    return found or None

                received = await eventually(shared)
                assert [e.type for e in received] == [BASELINE_SHARED]
                baseline = received[0].payload
                assert (baseline["profile_key"], baseline["source_cluster"], baseline["generation"]) == (
                    digest,
                    "spoke-a",
                    3,
                )
                assert baseline["data"]["processes"] == ["/usr/bin/nginx"]
                # a newer generation goes up again and comes down again; spoke-a never gets its own
                await add_profile(spoke_db, digest, 4, {"processes": ["/usr/bin/nginx", "/bin/sh"]})

                async def newer() -> list[Envelope] | None:
                    found = await read_stream(redis_client, prefix_b, BASELINES_STREAM)
                    return found if len(found) >= 2 else None

                assert (await eventually(newer))[1].payload["generation"] == 4
                assert state_a.counts["baselines_uploaded"] == 2
                assert await read_stream(redis_client, spoke_prefix, BASELINES_STREAM) == []
    finally:
        await engine_b.dispose()


# --------------------------------------------------------------------------- helpers


async def _count(counts: Any, key: str, at_least: int) -> bool:
    return bool(counts[key] >= at_least)


async def _registered_and_beating(client: httpx.AsyncClient) -> bool:
    seen = (await client.get("/v1/clusters/spoke-a", headers=WRITE_HEADERS)).json()
    return seen["last_heartbeat_at"] is not None
