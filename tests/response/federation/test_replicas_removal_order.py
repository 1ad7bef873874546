"""A removal handled before the placement it follows (found by the replicas audit).

``federation:policies`` is consumed by the consumer group ``response``, so the entries of one
policy can be handled by different replicas, and an entry a dead replica had read is only handled
``QCDR_STREAM_CLAIM_IDLE_MS`` later, after the entries behind it:

1. the spoke publishes ``policy_placed`` (enforced) for fp-r, from its placed set 1;
2. replica A reads it and dies before committing;
3. the hub removes fp-r: the spoke publishes ``policy_removed``, from its set 2;
4. replica B reads the removal: nothing is held; it remembers the removal with its number;
5. after the claim idle time replica B claims the placement: older than the removal, ignored.

Before the sequence numbers, step 5 applied the policy and it stayed enforced in the cluster
although the hub had removed it, with nothing to ever send another removal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from qcdr_common.db import make_engine
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.wait import eventually_async
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.settings import ResponseSettings
from qcdr_response.worker import ResponseWorker
from redis.asyncio import Redis

from tests.response.federation.conftest import placed, removed, tracing_manifest
from tests.response.federation.test_worker import fetch
from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

POLICIES = "federation:policies"
TPN = "TracingPolicyNamespaced"


@contextlib.asynccontextmanager
async def running(settings: ResponseSettings, redis: Redis, cluster: ClusterGateway) -> AsyncIterator[None]:
    engine = make_engine(settings.database_url.get_secret_value())
    worker = ResponseWorker(settings, engine, redis, cluster=cluster)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await engine.dispose()


async def test_a_removal_read_before_a_dead_replicas_placement_leaves_the_policy_applied(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    manifest = tracing_manifest(name="fed-kill-c2", policy_id="fp-r")
    key = stream_key(redis_prefix, POLICIES)
    await redis_client.xgroup_create(key, "response", id="0", mkstream=True)

    # 1-2: the placement is read by replica A, which dies before it commits anything
    await publish(
        redis_client, key, [placed(manifest, policy_id="fp-r", enforce=True, sequence=1)], maxlen=100_000
    )
    read = await redis_client.xreadgroup("response", "replica-a", {key: ">"}, count=10)
    assert len(read[0][1]) == 1
    # 3: the hub removes the policy; the spoke publishes the removal
    await publish(redis_client, key, [removed(manifest, policy_id="fp-r", sequence=2)], maxlen=100_000)

    k8s = K8sTestServer()
    with k8s.serve():
        cluster = ClusterGateway(k8s.async_client)
        settings = response_settings(
            database_url=committed_db,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            cluster_id="spoke-a",
            consumer_name="replica-b",
            stream_claim_idle_ms=300,
        )
        try:
            # 4-5: replica B handles the removal, then claims the dead replica's placement
            async with running(settings, redis_client, cluster):

                async def both_handled() -> bool:
                    pending = await redis_client.xpending(key, "response")
                    received = await fetch(committed_db, "SELECT count(*) AS n FROM response_received")
                    return int(pending["pending"]) == 0 and received[0]["n"] == 2

                await eventually_async(both_handled, 20, what="both entries handled")
                rows = await fetch(
                    committed_db, "SELECT status FROM response_policies WHERE name = 'fed-kill-c2'"
                )
                in_cluster = ("payments", "fed-kill-c2") in k8s.objects(TPN)
        finally:
            await cluster.close()

    # The hub removed fp-r last: it must not be enforced in the cluster.
    assert not in_cluster, f"removed on the hub but applied here (policy rows: {[dict(r) for r in rows]})"
    assert [r["status"] for r in rows] in ([], ["revoked"])
