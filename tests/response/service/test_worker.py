"""The worker end to end with the real Redis and PostgreSQL: findings in on analysis:findings,
links, versions, files and response:events out; redelivery and poison messages."""

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
from qcdr_common.streams.consumer import Delivery
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.producer import publish
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_common.testing.wait import eventually_async
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.settings import ResponseSettings
from qcdr_response.worker import ResponseWorker
from redis.asyncio import Redis

from tests.response.service.conftest import finding_envelope, make_finding, response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

FINDINGS = "analysis:findings"


async def scalar(database_url: str, sql: str) -> Any:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    await eventually_async(check, within_s, what="the worker")


@contextlib.asynccontextmanager
async def running(
    settings: ResponseSettings, redis: Redis, *, cluster: ClusterGateway | None = None, wrap: Any = None
) -> AsyncIterator[ResponseWorker]:
    engine = make_engine(settings.database_url.get_secret_value())
    worker = ResponseWorker(settings, engine, redis, cluster=cluster)
    if wrap is not None:
        worker.consumer.handler = wrap(worker.consumer.handler)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await engine.dispose()


def settings_for(db: str, redis_url: str, prefix: str, **overrides: Any) -> ResponseSettings:
    return response_settings(
        database_url=db, redis_url=redis_url, redis_prefix=prefix, stream_max_deliveries=2, **overrides
    )


async def links(db: str) -> int:
    return int(await scalar(db, "SELECT count(*) FROM response_finding_policy"))


async def test_findings_flow_through_the_worker_exactly_once(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    findings = [make_finding(namespace=ns) for ns in ("payments", "shop", "") for _ in range(10)]
    odd = make_finding(category="Weird_Thing", techniques=[])
    envelopes = [finding_envelope(f) for f in [*findings, odd]]
    poison = finding_envelope(make_finding()).model_copy(update={"payload": {"id": "broken"}})
    key = stream_key(redis_prefix, FINDINGS)
    await publish(redis_client, key, [*envelopes[:15], poison, *envelopes[15:]], maxlen=100_000)

    out = tmp_path / "policies"
    settings = settings_for(committed_db, redis_url, redis_prefix, output_dir=out)
    async with running(settings, redis_client):

        async def done() -> bool:
            return (
                await links(committed_db) == 31
                and await redis_client.xlen(dlq_key(redis_prefix, FINDINGS)) == 1
            )

        await eventually(done)
        events = stream_key(redis_prefix, "response:events")
        await eventually(lambda: _at_least(redis_client, events, 6))

        # the same envelopes again (a producer retry, a replay): skipped, nothing new
        await publish(redis_client, key, envelopes, maxlen=100_000)
        await eventually(lambda: _received(committed_db, 31, redis_client, key, settings.consumer_group))

    assert await links(committed_db) == 31
    # the malformed message did not split the batch: one version per scope
    assert await scalar(committed_db, "SELECT count(*) FROM response_policy_versions") == 3
    assert await scalar(committed_db, "SELECT count(*) FROM response_policies WHERE status = 'proposed'") == 3
    assert (
        await scalar(committed_db, "SELECT count(*) FROM response_finding_policy WHERE outcome = 'unmapped'")
        == 1
    )
    # every version was built from all 10 findings of its scope, whatever the batch boundaries
    assert await scalar(committed_db, "SELECT max(finding_count) FROM response_policy_versions") == 10

    [(_, letter)] = await redis_client.xrange(dlq_key(redis_prefix, FINDINGS))
    assert b"validation error" in letter[b"error"]
    assert orjson.loads(letter[b"data"])["id"] == poison.id

    published = await redis_client.xrange(stream_key(redis_prefix, "response:events"))
    types = sorted(fields[b"type"].decode() for _, fields in published)
    assert types.count("response.policy_changed") == await scalar(
        committed_db, "SELECT count(*) FROM response_policy_versions"
    )
    assert "response.policy_status_changed" in types
    assert await scalar(committed_db, "SELECT count(*) FROM response_outbox WHERE published_at IS NULL") == 0

    files = sorted(p.name for p in out.iterdir())
    assert files == ["cdr-block-network-scan-20260301.yaml"]
    text = (out / files[0]).read_text()
    assert text.startswith("# Generated by qcdr.")
    assert text.count("kind: TracingPolicy") == 3


async def _at_least(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) >= n


async def _received(db: str, links_expected: int, redis: Redis, key: str, group: str) -> bool:
    info = {g["name"].decode(): g for g in await redis.xinfo_groups(key)}[group]
    received = int(await scalar(db, "SELECT count(*) FROM response_received"))
    return info["lag"] == 0 and info["pending"] == 0 and received == 31 and await links(db) == links_expected


async def test_a_crash_between_commit_and_ack_changes_nothing_on_redelivery(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    """The handler commits, then the process 'dies' before XACK: the batch comes back and is skipped."""
    crashes = {"left": 1}

    def crash_after_commit(handler: Callable[[list[Delivery]], Awaitable[None]]) -> Any:
        async def wrapped(deliveries: list[Delivery]) -> None:
            await handler(deliveries)
            if crashes["left"]:
                crashes["left"] -= 1
                raise ConnectionError("killed between commit and ack")

        return wrapped

    envelopes: list[Envelope] = [finding_envelope(make_finding()) for _ in range(20)]
    await publish(redis_client, stream_key(redis_prefix, FINDINGS), envelopes, maxlen=100_000)
    settings = settings_for(committed_db, redis_url, redis_prefix)
    async with running(settings, redis_client, wrap=crash_after_commit):
        key = stream_key(redis_prefix, FINDINGS)

        async def settled() -> bool:
            groups = await redis_client.xinfo_groups(key)
            return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0

        await eventually(settled)
    assert crashes["left"] == 0
    assert await links(committed_db) == 20
    assert await scalar(committed_db, "SELECT count(*) FROM response_policy_versions") == 1
    assert await redis_client.xlen(dlq_key(redis_prefix, FINDINGS)) == 0


async def test_auto_apply_puts_new_versions_in_the_cluster(
    committed_db: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
    shared_path: Path,
) -> None:
    k8s = K8sTestServer(validator=ManifestValidator(shared_path))
    with k8s.serve():
        kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
        settings = settings_for(committed_db, redis_url, redis_prefix, auto_apply=True, kubeconfig=kubeconfig)
        cluster = ClusterGateway.from_settings(settings)
        assert cluster is not None
        findings = [make_finding(namespace=ns) for ns in ("payments", "shop")]
        await publish(
            redis_client,
            stream_key(redis_prefix, FINDINGS),
            [finding_envelope(f) for f in findings],
            maxlen=10_000,
        )
        try:
            async with running(settings, redis_client, cluster=cluster):

                async def applied() -> bool:
                    n = await scalar(
                        committed_db, "SELECT count(*) FROM response_policies WHERE status = 'applied'"
                    )
                    return int(n) == 2

                await eventually(applied)
        finally:
            await cluster.close()
        assert set(k8s.objects("TracingPolicyNamespaced")) == {
            ("payments", "cdr-block-network-scan"),
            ("shop", "cdr-block-network-scan"),
        }


def test_auto_apply_needs_a_cluster() -> None:
    with pytest.raises(ValueError, match="auto_apply needs a cluster"):
        response_settings(auto_apply=True)
