"""Several analysis replicas: one consumes, the others stand by, and a hand-over neither loses nor
repeats an attack chain (the real Tetragon chain split across the two leaders)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from qcdr_analysis.leader import LeaderElected
from qcdr_analysis.worker import elected_worker
from qcdr_common.db import make_engine
from qcdr_common.streams import publish, stream_key
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import analysis_settings
from tests.analysis.test_chains_service import PATTERN, chain_envelopes, chains, consumed
from tests.analysis.test_worker import wait_for

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

# renewed every third of it: a renewal may come over a second late (the other replica's worker
# build blocks the shared loop; a busy machine) before the lease is lost, which 0.6 s did not allow
LEASE_S = 2.0


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    yield engine
    await engine.dispose()


class Replica:
    """One analysis replica's worker, as ``serve``/``consume`` run it."""

    def __init__(self, name: str, engine: AsyncEngine, redis: Redis, prefix: str) -> None:
        settings = analysis_settings(
            redis_prefix=prefix,
            consumer_name=name,
            leader_lease_s=LEASE_S,
            stream_batch=4,
            stream_claim_idle_ms=200,
            correlation_idle_flush_s=0.3,
            disabled_detectors=frozenset({"behaviour_profile", "workload_anomaly"}),
        )
        run = elected_worker(settings, engine, redis)
        self.election: LeaderElected = run.__self__  # type: ignore[attr-defined]
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run(self.stop))

    @property
    def leads(self) -> int:
        return self.election.leads

    def count_tries(self) -> list[int]:
        """Counts the tries to take the lease from now on (call before the first await)."""
        tries = [0]
        acquire = self.election.lease.acquire

        async def counted() -> bool:
            tries[0] += 1
            return await acquire()

        self.election.lease.acquire = counted  # type: ignore[method-assign]
        return tries

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


async def consumers(redis: Redis, key: str) -> dict[str, int]:
    """Consumer name -> entries pending on it, for every consumer the group has seen."""
    try:
        rows = await redis.xinfo_consumers(key, "analysis")
    except Exception:  # no group yet
        return {}
    return {r["name"].decode(): int(r["pending"]) for r in rows}


async def test_one_replica_consumes_and_the_standby_completes_its_chain(
    engine: AsyncEngine, db: str, redis_client: Any, redis_prefix: str, shared_path: Path
) -> None:
    redis: Redis = redis_client
    key = stream_key(redis_prefix, "ingest:events")
    envelopes = chain_envelopes(shared_path)
    a = Replica("analysis-a", engine, redis, redis_prefix)
    await wait_for(lambda: _true(a.leads == 1))
    b = Replica("analysis-b", engine, redis, redis_prefix)
    tries = b.count_tries()
    try:
        await publish(redis, key, envelopes[:12], maxlen=10_000)
        await wait_for(lambda: consumed(redis, key), 30)
        await wait_for(lambda: _true(tries[0] >= 2), 30)  # the standby tried, more than once
        assert (a.leads, b.leads) == (1, 0)
        assert list(await consumers(redis, key)) == ["analysis-a"]  # b never read
        assert await chains(db) == []  # half a chain

        await a.close()  # a rolling update: a releases the lease, b takes over
        await wait_for(lambda: _true(b.leads == 1), 30)
        await publish(redis, key, envelopes[12:], maxlen=10_000)
        await wait_for(lambda: _chains_at_least(db, 1), 30)
        # everything again (a replay): still one chain
        await publish(redis, key, envelopes, maxlen=10_000)
        await wait_for(lambda: consumed(redis, key), 30)
    finally:
        await b.close()
        if not a.task.done():
            await a.close()
    assert [c["category"] for c in await chains(db)] == [f"chain.{PATTERN}"]


async def test_a_leader_that_loses_the_lease_stops_and_leads_again_with_fresh_state(
    engine: AsyncEngine, db: str, redis_client: Any, redis_prefix: str, shared_path: Path
) -> None:
    redis: Redis = redis_client
    events_key = stream_key(redis_prefix, "ingest:events")
    lease_key = f"{redis_prefix}:analysis:leader"
    envelopes = chain_envelopes(shared_path)
    a = Replica("analysis-a", engine, redis, redis_prefix)
    try:
        await publish(redis, events_key, envelopes[:12], maxlen=10_000)
        await wait_for(lambda: consumed(redis, events_key), 30)
        # another replica holds the lease now (a's renewal stalled past the TTL, say), until it
        # is deleted below (an expiry would end the test's point on a busy machine)
        await redis.set(lease_key, "analysis-z:intruder", px=600_000)
        await wait_for(lambda: _true(not a.election.leading), 30)  # at a's next renewal
        assert not a.election.holds()  # its consumers' gate is shut
        await publish(redis, events_key, envelopes[12:], maxlen=10_000)
        await asyncio.sleep(LEASE_S / 3)  # one of a's tries to take the lease back
        assert await chains(db) == []  # a stood by: the rest of the chain waits
        waiting = await redis.xinfo_groups(events_key)
        assert waiting[0]["lag"] > 0

        await redis.delete(lease_key)  # the intruder goes away
        await wait_for(lambda: _true(a.leads == 2), 30)
        await wait_for(lambda: _chains_at_least(db, 1), 30)
    finally:
        await a.close()
    assert [c["category"] for c in await chains(db)] == [f"chain.{PATTERN}"]
    assert await redis.get(lease_key) is None  # released at the clean stop


async def _true(value: bool) -> bool:
    return value


async def _chains_at_least(db: str, n: int) -> bool:
    return len(await chains(db)) >= n


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_leader_stalled_past_its_lease_closes_its_gate(redis_client: Any, redis_prefix: str) -> None:
    """The gate the consumers ask: open after a take or renewal for 90 % of the lease, shut after a
    stall (the process's clock moved on without a renewal), open again once renewed."""
    from qcdr_common.streams.lease import RedisLease

    clock = FakeClock()
    lease = RedisLease(redis_client, f"{redis_prefix}:analysis:leader", "analysis-a", ttl_s=30)
    election = LeaderElected(lease, lambda gate: [], lease_s=30, clock=clock)
    assert not election.holds()
    assert await election._acquire(asyncio.Event())
    assert election.holds()
    clock.now += 26  # within 90 % of the lease
    assert election.holds()
    clock.now += 2  # 28 s without a renewal: a standby may be about to take over
    assert not election.holds()
    assert await lease.renew()
    election._renewed(clock.now)
    assert election.holds()


async def test_a_slow_worker_build_does_not_cost_the_new_lead_its_lease(
    redis_client: Any, redis_prefix: str
) -> None:
    """Building a worker (rules, patterns, models) blocks the loop; on a busy node that took longer
    than a short lease. Built while standing by, it cannot expire the lease it has not taken yet."""
    import time

    from qcdr_common.streams.lease import RedisLease

    lease_s = 1.0
    built: list[float] = []

    def slow_factory(gate: Any) -> list[Any]:
        time.sleep(lease_s * 1.5)  # synchronous, like loading rule files and models
        built.append(time.monotonic())
        return []

    lease = RedisLease(redis_client, f"{redis_prefix}:analysis:leader", "analysis-a", ttl_s=lease_s)
    election = LeaderElected(lease, slow_factory, lease_s=lease_s)
    stop = asyncio.Event()
    task = asyncio.create_task(election.run(stop))
    try:
        await wait_for(lambda: _true(election.leading), 5)
        await asyncio.sleep(lease_s * 3)  # several renewals
        assert election.leads == 1  # never lost and retaken
        assert election.leading
        assert election.holds()
        assert len(built) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert len(built) == 1  # a clean stop builds no other


async def test_the_gate_is_shut_before_the_workers_of_a_lost_lead_stop(
    redis_client: Any, redis_prefix: str
) -> None:
    """What a worker writes on its way out (the idle saver's last save) asks the gate: after a loss
    it must already say no, while the lease was only released it still says yes."""
    from qcdr_common.streams.lease import RedisLease

    lease_s = 2.0  # renewed on time also on a busy machine: the clean stop finds it held
    key = f"{redis_prefix}:analysis:leader"
    at_stop: list[bool] = []

    def factory(gate: Any) -> list[Any]:
        async def worker(stop: asyncio.Event) -> None:
            await stop.wait()
            at_stop.append(gate())

        return [worker]

    election = LeaderElected(
        RedisLease(redis_client, key, "analysis-a", ttl_s=lease_s), factory, lease_s=lease_s
    )
    stop = asyncio.Event()
    task = asyncio.create_task(election.run(stop))
    try:
        await wait_for(lambda: _true(election.leading), 30)
        await redis_client.set(key, "analysis-z:intruder", px=60_000)  # taken by another replica
        await wait_for(lambda: _true(at_stop == [False]), 30)
        await redis_client.delete(key)
        await wait_for(lambda: _true(election.leads == 2), 30)
    finally:
        stop.set()  # a clean stop: the lease is still held while the worker winds down
        await asyncio.wait_for(task, 30)
    assert at_stop == [False, True]
