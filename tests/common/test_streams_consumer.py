"""The consumer-group loop against the real Redis: batches, acks, poison isolation, DLQ, reclaiming
a crashed consumer's entries, own pending first, stopping, and the lag metric."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import structlog
from prometheus_client import REGISTRY
from qcdr_common.streams import (
    Delivery,
    Envelope,
    LagExporter,
    StreamConsumer,
    dlq_key,
    install_signal_handlers,
    new_envelope,
    publish,
    read_dead_letters,
    requeue,
    run_until_stopped,
    stream_key,
)
from qcdr_common.testing.logs import capture_logs
from qcdr_common.testing.wait import eventually_async
from redis.asyncio import Redis

pytestmark = pytest.mark.redis

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STREAM = "svc:things"
GROUP = "consumer-svc"
FAST = {"block_ms": 20, "claim_idle_ms": 30}


@pytest.fixture
def redis(redis_client: object) -> Redis:
    return cast(Redis, redis_client)


def make_envelopes(n: int, start: int = 0) -> list[Envelope]:
    return [
        new_envelope("svc.thing_happened", {"n": i}, source="svc", cluster_id="c1", occurred_at=T0)
        for i in range(start, start + n)
    ]


async def put(redis: Redis, prefix: str, envelopes: list[Envelope]) -> list[str]:
    return await publish(redis, stream_key(prefix, STREAM), envelopes, maxlen=100_000)


class Recorder:
    """A handler that records batches and can be told to fail on some payloads."""

    def __init__(self, poison: set[int] | None = None, on_batch: Callable[[], Awaitable[None]] | None = None):
        self.batches: list[list[Delivery]] = []
        self.handled: list[int] = []
        self.poison = poison or set()
        self.on_batch = on_batch

    async def __call__(self, deliveries: list[Delivery]) -> None:
        self.batches.append(deliveries)
        if self.on_batch is not None:
            await self.on_batch()
        bad = [d for d in deliveries if d.envelope.payload["n"] in self.poison]
        if bad:
            structlog.get_logger("test").warning("poison", n=bad[0].envelope.payload["n"])
            raise ValueError(f"cannot handle n={bad[0].envelope.payload['n']}")
        self.handled.extend(d.envelope.payload["n"] for d in deliveries)


async def run_until(
    consumer: StreamConsumer, done: Callable[[], Awaitable[bool]], seconds: float = 5
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(seconds):
            while not await done():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def consumer(redis: Redis, prefix: str, handler: Any, name: str = "pod-a", **kw: Any) -> StreamConsumer:
    return StreamConsumer(
        redis, prefix=prefix, stream=STREAM, group=GROUP, consumer=name, handler=handler, **{**FAST, **kw}
    )


async def pending(redis: Redis, prefix: str) -> int:
    return int((await redis.xpending(stream_key(prefix, STREAM), GROUP))["pending"])


async def test_reads_micro_batches_and_acks(redis: Redis, redis_prefix: str) -> None:
    await put(redis, redis_prefix, make_envelopes(25))  # published before the group exists
    rec = Recorder()
    c = consumer(redis, redis_prefix, rec, batch=10)

    async def all_handled() -> bool:
        return len(rec.handled) == 25

    await run_until(c, all_handled)
    assert sorted(rec.handled) == list(range(25))
    assert max(len(b) for b in rec.batches) == 10
    assert len(rec.batches) <= 4
    assert all(d.deliveries == 1 for b in rec.batches for d in b)
    assert await pending(redis, redis_prefix) == 0
    handled = REGISTRY.get_sample_value(
        "qcdr_stream_messages_handled_total", {"stream": STREAM, "group": GROUP}
    )
    assert handled is not None
    assert handled >= 25


async def test_poison_message_is_isolated_then_dead_lettered_with_its_error(
    redis: Redis, redis_prefix: str
) -> None:
    envelopes = make_envelopes(6)
    ids = await put(redis, redis_prefix, envelopes)
    rec = Recorder(poison={3})
    c = consumer(redis, redis_prefix, rec, batch=10, max_deliveries=3)
    dlq = dlq_key(redis_prefix, STREAM)

    async def dead_lettered() -> bool:
        return int(await redis.xlen(dlq)) == 1

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await run_until(c, dead_lettered)
    assert sorted(rec.handled) == [0, 1, 2, 4, 5]  # the rest of the batch went through at once
    poison_tries = [b for b in rec.batches if [d.envelope.payload["n"] for d in b] == [3]]
    assert [b[0].deliveries for b in poison_tries] == [1, 2, 3]
    assert await pending(redis, redis_prefix) == 0

    [letter] = await read_dead_letters(redis, redis_prefix, STREAM)
    assert letter.original_entry_id == ids[3]
    assert "ValueError: cannot handle n=3" in letter.error
    assert (letter.deliveries, letter.group, letter.consumer, letter.stream) == (3, GROUP, "pod-a", STREAM)
    assert letter.type == "svc.thing_happened"
    assert letter.envelope == envelopes[3]
    # handled alone, the poison message's log lines carry its ids; in a batch, the batch size
    poison_logs = [e for e in logs if e.get("event") == "poison"]
    assert poison_logs[0]["batch_size"] == 6
    assert "envelope_id" not in poison_logs[0]
    assert len(poison_logs) == 4
    for entry in poison_logs[1:]:
        assert entry["correlation_id"] == envelopes[3].correlation_id
        assert entry["envelope_id"] == envelopes[3].id
        assert entry["envelope_type"] == "svc.thing_happened"
        assert (entry["stream"], entry["group"], entry["consumer"]) == (STREAM, GROUP, "pod-a")

    # once fixed, a requeue hands it to the group again
    assert await requeue(redis, redis_prefix, STREAM, maxlen=100_000) == 1
    assert await redis.xlen(dlq) == 0
    rec.poison.clear()

    async def requeued_handled() -> bool:
        return 3 in rec.handled

    await run_until(c, requeued_handled)


async def test_invalid_entries_and_crash_loops_go_to_the_dlq(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, STREAM)
    await redis.xadd(key, {b"type": b"svc.thing_happened", b"data": b"{not json"})
    [crasher] = await put(redis, redis_prefix, make_envelopes(1))
    c = consumer(redis, redis_prefix, Recorder(), max_deliveries=3)
    await c.ensure_group()
    # a message that killed the process three times: read, never acked nor failed cleanly
    await redis.xreadgroup(GROUP, "pod-dead", {key: ">"})
    await redis.xclaim(key, GROUP, "pod-dead", min_idle_time=0, message_ids=[crasher], retrycount=3)

    async def both_dead() -> bool:
        return int(await redis.xlen(dlq_key(redis_prefix, STREAM))) == 2

    await run_until(c, both_dead)
    letters = {d.original_entry_id: d for d in await read_dead_letters(redis, redis_prefix, STREAM)}
    assert letters[crasher].error.startswith("delivered 4 times without being acknowledged")
    [invalid] = [d for d in letters.values() if d.original_entry_id != crasher]
    assert invalid.error.startswith("invalid envelope")
    assert invalid.envelope is None
    assert await pending(redis, redis_prefix) == 0


async def test_a_crashed_consumers_entries_are_reclaimed_by_another(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, STREAM)
    await put(redis, redis_prefix, make_envelopes(5))
    rec = Recorder()
    b = consumer(redis, redis_prefix, rec, name="pod-b", claim_idle_ms=50)
    await b.ensure_group()
    # pod A reads the five entries and dies before acknowledging them
    read: Any = await redis.xreadgroup(GROUP, "pod-a", {key: ">"}, count=10)
    assert len(read[0][1]) == 5

    async def all_handled() -> bool:
        return len(rec.handled) == 5

    await run_until(b, all_handled)
    assert sorted(rec.handled) == list(range(5))
    assert all(d.deliveries == 2 for batch in rec.batches for d in batch)
    assert await pending(redis, redis_prefix) == 0


async def test_own_pending_entries_are_handled_first_after_a_restart(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, STREAM)
    await put(redis, redis_prefix, make_envelopes(3))
    rec = Recorder()
    c = consumer(redis, redis_prefix, rec, claim_idle_ms=60_000)
    await c.ensure_group()
    await redis.xreadgroup(GROUP, "pod-a", {key: ">"}, count=10)  # the previous life read these
    await put(redis, redis_prefix, make_envelopes(3, start=3))

    async def all_handled() -> bool:
        return len(rec.handled) == 6

    await run_until(c, all_handled)
    first = rec.batches[0]
    assert [d.envelope.payload["n"] for d in first] == [0, 1, 2]
    assert [d.deliveries for d in first] == [2, 2, 2]
    assert sorted(rec.handled) == list(range(6))


async def test_trimmed_pending_entries_are_acknowledged(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, STREAM)
    ids = await put(redis, redis_prefix, make_envelopes(2))
    rec = Recorder()
    c = consumer(redis, redis_prefix, rec)
    await c.ensure_group()
    await redis.xreadgroup(GROUP, "pod-a", {key: ">"})
    await redis.xdel(key, ids[0])  # MAXLEN trimming does the same to old entries

    async def clean() -> bool:
        return len(rec.handled) == 1 and await pending(redis, redis_prefix) == 0

    await run_until(c, clean)
    assert rec.handled == [1]


async def test_stop_finishes_and_acks_the_batch_in_hand_then_stops_reading(
    redis: Redis, redis_prefix: str
) -> None:
    await put(redis, redis_prefix, make_envelopes(10))
    stop = asyncio.Event()

    async def stop_mid_batch() -> None:
        stop.set()  # SIGTERM arrives while the batch is being handled
        await asyncio.sleep(0.05)

    rec = Recorder(on_batch=stop_mid_batch)
    c = consumer(redis, redis_prefix, rec, batch=4)
    await asyncio.wait_for(c.run(stop), 5)
    assert rec.handled == [0, 1, 2, 3]
    assert await pending(redis, redis_prefix) == 0
    info = (await redis.xinfo_groups(stream_key(redis_prefix, STREAM)))[0]
    assert info["lag"] == 6


async def test_signal_sets_the_stop_event_and_run_until_stopped_propagates_failures() -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 2)
    finally:
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)

    stopped_cleanly = asyncio.Event()

    async def well_behaved(stop: asyncio.Event) -> None:
        await stop.wait()
        stopped_cleanly.set()

    async def broken(stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(run_until_stopped(well_behaved, broken, signals=False), 5)
    assert info.group_contains(RuntimeError, match="boom")
    assert stopped_cleanly.is_set()


async def test_lag_metric_reflects_the_backlog(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, STREAM)
    exporter = LagExporter(redis, prefix=redis_prefix, groups=[(STREAM, GROUP)], interval_s=0.01)
    await exporter.sample()  # no stream yet: nothing, no error
    await put(redis, redis_prefix, make_envelopes(7))
    await consumer(redis, redis_prefix, Recorder()).ensure_group()
    labels = {"stream": STREAM, "group": GROUP}

    def sampled(lag: int, pending: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (
                REGISTRY.get_sample_value("qcdr_stream_lag", labels) == lag
                and REGISTRY.get_sample_value("qcdr_stream_pending", labels) == pending
            )

        return check

    stop = asyncio.Event()
    task = asyncio.create_task(exporter.run(stop))
    try:
        await eventually_async(sampled(7, 0), what="the first sample")
        read: Any = await redis.xreadgroup(GROUP, "pod-a", {key: ">"}, count=3)
        await redis.xack(key, GROUP, read[0][1][0][0])
        await eventually_async(sampled(4, 2), what="a sample after the read")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert REGISTRY.get_sample_value("qcdr_stream_length", {"stream": STREAM}) == 7


async def test_a_slow_batch_stays_with_its_live_consumer(redis: Redis, redis_prefix: str) -> None:
    """Another replica reclaims entries idle for claim_idle_ms; a batch still being handled is
    kept claimed by its consumer, so it is neither handled twice at once nor counted again."""
    await put(redis, redis_prefix, make_envelopes(3))

    working = asyncio.Event()

    async def slow() -> None:
        working.set()
        # 2.5 times claim_idle_ms: b's claims (every 0.3 s) would take it from 0.6 s on; a's keeper
        # touches it every 0.2 s, late by up to 0.4 s on a busy machine without losing it
        await asyncio.sleep(1.5)

    slow_rec, other_rec = Recorder(on_batch=slow), Recorder()
    a = consumer(redis, redis_prefix, slow_rec, name="pod-a", claim_idle_ms=600)
    b = consumer(redis, redis_prefix, other_rec, name="pod-b", claim_idle_ms=600)
    await a.ensure_group()
    stop = asyncio.Event()
    task_a = asyncio.create_task(a.run(stop))
    try:
        await asyncio.wait_for(working.wait(), 30)  # a has read them and is working

        async def a_done() -> bool:
            return len(slow_rec.handled) == 3

        await run_until(b, a_done, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task_a, 5)
    assert other_rec.batches == []
    assert [len(batch) for batch in slow_rec.batches] == [3]
    assert all(d.deliveries == 1 for d in slow_rec.batches[0])
    assert await pending(redis, redis_prefix) == 0


async def test_keeping_a_batch_claimed_does_not_count_deliveries(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, STREAM)
    old, batch = (
        await put(redis, redis_prefix, make_envelopes(1)),
        await put(redis, redis_prefix, make_envelopes(2, start=1)),
    )
    c = consumer(redis, redis_prefix, Recorder(), name="pod-a", claim_idle_ms=90)
    await c.ensure_group()
    await redis.xreadgroup(GROUP, "pod-a", {key: ">"}, count=10)  # an older failure, then the batch
    await asyncio.sleep(0.1)
    handled = asyncio.Event()
    keeper = asyncio.create_task(c._keep_claimed(handled, batch))
    await asyncio.sleep(1.0)  # some thirty touches, 30 ms apart
    rows = await redis.xpending_range(key, GROUP, min="-", max="+", count=10)
    handled.set()
    await keeper
    by_id = {r["message_id"].decode(): r for r in rows}
    assert {i: (by_id[i]["consumer"], by_id[i]["times_delivered"]) for i in batch} == dict.fromkeys(
        batch, (b"pod-a", 1)
    )
    # touched lately (how lately, a busy machine decides; untouched, they would be 1.1 s idle)
    assert all(by_id[i]["time_since_delivered"] < 550 for i in batch)
    # the older entry is not the batch's: it ages, so the claim loop retries it
    assert by_id[old[0]]["time_since_delivered"] >= 1000


async def test_a_closed_gate_reads_nothing_until_it_opens(redis: Redis, redis_prefix: str) -> None:
    await put(redis, redis_prefix, make_envelopes(3))
    got = asyncio.Event()

    async def mark() -> None:
        got.set()

    rec = Recorder(on_batch=mark)
    open_ = False
    asked = 0

    def gate() -> bool:
        nonlocal asked
        asked += 1
        return open_

    c = consumer(redis, redis_prefix, rec, gate=gate)
    await c.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    try:

        async def asked_again() -> bool:
            return asked >= 5

        await eventually_async(asked_again, what="the gate asked five times")  # and said no each time
        assert rec.batches == []
        assert await pending(redis, redis_prefix) == 0  # not even read
        open_ = True
        await asyncio.wait_for(got.wait(), 30)
    finally:
        stop.set()  # the batch in hand is finished first
        await asyncio.wait_for(task, 5)
    assert sorted(rec.handled) == [0, 1, 2]
