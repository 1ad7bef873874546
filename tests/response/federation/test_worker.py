"""The worker end to end: placements on federation:policies (real Redis), policies, files, the
cluster and response:events out, as the federation spoke sees them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from qcdr_common.db import make_engine
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.producer import publish
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.wait import eventually_async
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.settings import ResponseSettings
from qcdr_response.worker import ResponseWorker
from redis.asyncio import Redis

from tests.response.federation.conftest import hub_hash, placed, removed, tracing_manifest
from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

POLICIES = "federation:policies"
EVENTS = "response:events"
TPN = "TracingPolicyNamespaced"


async def fetch(database_url: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    await eventually_async(check, within_s, what="the worker")


@contextlib.asynccontextmanager
async def running(
    settings: ResponseSettings, redis: Redis, cluster: ClusterGateway | None
) -> AsyncIterator[ResponseWorker]:
    engine = make_engine(settings.database_url.get_secret_value())
    worker = ResponseWorker(settings, engine, redis, cluster=cluster)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await engine.dispose()


async def entries(redis: Redis, key: str) -> list[dict[bytes, bytes]]:
    found: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(key)  # type: ignore[assignment]
    return [fields for _, fields in found]


async def published(redis: Redis, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    found = await entries(redis, stream_key(prefix, EVENTS))
    return [(f[b"type"].decode(), orjson.loads(f[b"data"])["payload"]) for f in found]


async def test_placements_flow_through_the_worker(
    committed_db: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
    k8s: K8sTestServer,
    cluster: ClusterGateway,
) -> None:
    enforced = tracing_manifest(policy_id="fp-e")
    proposed = tracing_manifest(name="fed-audit", policy_id="fp-p", action="Post")
    placements: list[Envelope] = [
        placed(enforced, policy_id="fp-e", enforce=True),
        placed(proposed, policy_id="fp-p", name="audit"),
    ]
    poison = placements[0].model_copy(update={"id": "poison-1", "payload": {"nope": True}})
    key = stream_key(redis_prefix, POLICIES)
    await publish(redis_client, key, [placements[0], poison, placements[1]], maxlen=100_000)

    out = tmp_path / "policies"
    settings = response_settings(
        database_url=committed_db,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        stream_max_deliveries=2,
        output_dir=out,
        cluster_id="spoke-a",
    )
    async with running(settings, redis_client, cluster) as worker:
        assert (POLICIES, "response") in worker.lag.groups

        async def applied_and_published() -> bool:
            rows = await fetch(committed_db, "SELECT status FROM response_policies ORDER BY name")
            types = [t for t, _ in await published(redis_client, redis_prefix)]
            return [r["status"] for r in rows] == ["proposed", "applied"] and len(types) == 5

        await eventually(applied_and_published)
        await eventually(lambda: _xlen_is(redis_client, dlq_key(redis_prefix, POLICIES), 1))
        assert ("payments", "fed-block-c2") in k8s.objects(TPN)
        assert sorted(p.name for p in out.iterdir()) == [
            "cdr-federated-fed-audit.yaml",
            "cdr-federated-fed-block-c2.yaml",
        ]

        events = await published(redis_client, redis_prefix)
        by_policy = {
            hub_id: [
                (t, p.get("to_status") or p.get("status"))
                for t, p in events
                if p["federation"]["policy_id"] == hub_id
            ]
            for hub_id in ("fp-e", "fp-p")
        }
        assert by_policy["fp-e"] == [
            ("response.policy_changed", "approved"),
            ("response.policy_status_changed", "approved"),
            ("response.policy_status_changed", "applied"),
        ]
        assert by_policy["fp-p"] == [
            ("response.policy_changed", "proposed"),
            ("response.policy_status_changed", "proposed"),
        ]
        assert all(p["federation"]["generation"] == 1 for _, p in events)
        assert {p["federation"]["content_hash"] for _, p in events} == {
            hub_hash(enforced),
            hub_hash(proposed),
        }

        # redelivered placements (a replay of the spoke's outbox) change nothing; removal revokes
        await publish(redis_client, key, [*placements, removed(enforced, policy_id="fp-e")], maxlen=100_000)

        async def revoked() -> bool:
            rows = await fetch(
                committed_db, "SELECT status FROM response_policies WHERE name = 'fed-block-c2'"
            )
            return [r["status"] for r in rows] == ["revoked"] and not out.joinpath(
                "cdr-federated-fed-block-c2.yaml"
            ).exists()

        await eventually(revoked)
        await eventually(lambda: _count_is(redis_client, redis_prefix, 6))
        assert k8s.objects(TPN) == {}
        assert sorted(p.name for p in out.iterdir()) == ["cdr-federated-fed-audit.yaml"]

    type_, last = (await published(redis_client, redis_prefix))[-1]
    assert (type_, last["from_status"], last["to_status"]) == (
        "response.policy_status_changed",
        "applied",
        "revoked",
    )
    [letter] = await entries(redis_client, dlq_key(redis_prefix, POLICIES))
    assert b"validation error" in letter[b"error"]


async def _xlen_is(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) == n


async def _count_is(redis: Redis, prefix: str, n: int) -> bool:
    return len(await published(redis, prefix)) == n


async def test_the_consumer_can_be_turned_off(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    settings = response_settings(
        database_url=committed_db, redis_url=redis_url, redis_prefix=redis_prefix, federation_policies=False
    )
    engine = make_engine(committed_db)
    try:
        worker = ResponseWorker(settings, engine, redis_client)
        assert worker.federation_consumer is None
        assert [name for name, _ in worker.lag.groups] == ["analysis:findings"]
    finally:
        await engine.dispose()
