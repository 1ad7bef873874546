"""Delivery rules without a network: backoff, the rate limit, exclusive claims across workers, and
a resolve held back until its group's earlier messages went out."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_response.outputs import delivery
from qcdr_response.outputs.base import Outcome, Sink, SinkConfig, Status
from qcdr_response.outputs.delivery import SharedTokenBucket, SinkDelivery, TokenBucket, backoff_s
from qcdr_response.outputs.grouping import enqueue
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.resolve import enqueue_resolve

from tests.response.service.conftest import make_finding

pytestmark = [pytest.mark.db]


class Recorder(Sink[SinkConfig]):
    """Accepts everything and remembers the order (a sink double for the worker's rules)."""

    sink_type = "recorder"
    config_model = SinkConfig

    def __init__(self, config: SinkConfig) -> None:
        super().__init__(config)
        self.sent: list[OutputMessage] = []

    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        self.sent.extend(messages)
        return [Outcome(Status.DELIVERED)] * len(messages)


def test_backoff_is_jittered_capped_and_respects_retry_after() -> None:
    rng = random.Random(1)
    draws = [backoff_s(a, 1.0, 30.0, None, rng) for a in range(1, 12) for _ in range(50)]
    assert all(0 <= d <= 30.0 for d in draws)
    assert max(backoff_s(1, 1.0, 30.0, None, rng) for _ in range(200)) <= 1.0
    assert backoff_s(1, 1.0, 30.0, 120.0, rng) == 120.0


async def test_the_token_bucket_holds_the_rate() -> None:
    bucket = TokenBucket(20.0)
    start = time.monotonic()
    for _ in range(30):
        await bucket.take(1)
    # 20 in the first second's burst, 10 more need at least half a second
    assert time.monotonic() - start >= 0.45


class Sleeps:
    """``asyncio`` as the delivery module sees it, remembering the waits its buckets ask for."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(seconds)


@pytest.mark.redis
async def test_replicas_share_a_sinks_rate(
    redis_client: Any, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas' buckets for one sink hold the sink's rate together, not each."""
    sleeps = Sleeps()
    monkeypatch.setattr(delivery, "asyncio", sleeps)
    key = f"{redis_prefix}:response:outputs:slack:rate"
    a, b = (SharedTokenBucket(20.0, redis_client, key) for _ in range(2))
    start = time.monotonic()

    async def send(bucket: SharedTokenBucket) -> None:
        for _ in range(15):
            await bucket.take(1)

    await asyncio.gather(send(a), send(b))
    # 30 in all: the shared burst of 20, then 10 more at 20/s
    assert time.monotonic() - start >= 0.45
    assert sleeps.asked
    # each alone would not wait at all (asked, not timed: a busy machine is slow without waiting)
    sleeps.asked.clear()
    separate = [SharedTokenBucket(20.0, redis_client, f"{key}:{i}") for i in range(2)]
    await asyncio.gather(*(send(bucket) for bucket in separate))
    assert sleeps.asked == []


async def test_without_redis_the_shared_bucket_is_this_replicas() -> None:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    bucket = SharedTokenBucket(20.0, unreachable, "any")
    start = time.monotonic()
    for _ in range(30):
        await bucket.take(1)
    assert time.monotonic() - start >= 0.45  # still limited, by the local bucket
    await unreachable.aclose()


async def test_claims_are_exclusive_and_a_resolve_waits_for_its_group(committed_db: str) -> None:
    engine = make_engine(committed_db)
    sessions = make_session_factory(engine)
    config = SinkConfig(name="rec", group_by=("finding",), batch_size=10)
    try:
        findings = [make_finding() for _ in range(40)]
        async with sessions.begin() as session:
            await enqueue(session, [config], findings, cluster_id="c", now=datetime.now(UTC))
        a, b = SinkDelivery(Recorder(config), sessions), SinkDelivery(Recorder(config), sessions)
        claimed = await asyncio.gather(a.claim(25), b.claim(25))
        ids = [r.id for rows in claimed for r in rows]
        assert len(ids) == len(set(ids)) == 40

        grouped = SinkConfig(name="grp", batch_size=10)
        first = make_finding(namespace="ops")
        async with sessions.begin() as session:
            await enqueue(session, [grouped], [first], cluster_id="c", now=datetime.now(UTC))
            await enqueue_resolve(session, [grouped], first, cluster_id="c")
        worker = SinkDelivery(Recorder(grouped), sessions)
        rows = await worker.claim(10)
        assert [r.kind for r in rows] == ["alert"]  # the resolve is held back
        await worker.deliver(rows)
        rows = await worker.claim(10)
        assert [r.kind for r in rows] == ["resolve"]
    finally:
        await engine.dispose()
