"""Delivery rules without a network: backoff, the rate limit, exclusive claims across workers, and
a resolve held back until its group's earlier messages went out."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from qcdr_common.db import make_engine, make_session_factory
from qcdr_response.outputs import delivery
from qcdr_response.outputs.base import Outcome, Sink, SinkConfig, Status
from qcdr_response.outputs.delivery import SharedTokenBucket, SinkDelivery, TokenBucket, backoff_s
from qcdr_response.outputs.grouping import enqueue
from qcdr_response.outputs.http import RETRY_AFTER_LIMIT_S, classify, retry_after
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.models import DeadLetterRow, OutputQueueRow
from qcdr_response.outputs.resolve import enqueue_resolve
from sqlalchemy import select

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
    # a message retried for a week at the 300 s cap is past attempt 1025, where 2 ** attempts no
    # longer fits a float: that raised inside the bookkeeping of the whole batch
    assert 0 <= backoff_s(2100, 1.0, 300.0, None, rng) <= 300.0


@pytest.mark.parametrize("max_age_s", [365 * 86400 + 1, 1e12, math.inf])
def test_max_age_is_at_most_a_year(max_age_s: float) -> None:
    """Every claim computes created_at + max_age: past datetime's range (1e12 s is 31,700 years)
    that raised on each batch, after the batch had been sent, so it was sent again and again."""
    with pytest.raises(ValidationError, match="max_age_s"):
        SinkConfig(name="s", max_age_s=max_age_s)


NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Fri, 01 May 2026 12:05:00 GMT", 300.0),  # the HTTP-date form
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("99999999999999", RETRY_AFTER_LIMIT_S),  # past datetime's range from now: capped
        ("9" * 400, RETRY_AFTER_LIMIT_S),  # past a float's range
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_LIMIT_S),
        ("\xb2", None),  # '²'.isdigit() is true, float('²') raised inside classify()
        ("\u0661\u0662", None),  # Arabic-Indic digits: not delta-seconds (ASCII digits only)
        ("-5", None),
        ("1.5", None),
        ("soon", None),
    ],
)
def test_retry_after_takes_ascii_seconds_or_a_date_and_caps_them(header: str, seconds: float | None) -> None:
    # sent as UTF-8 bytes; httpx decodes header values as UTF-8 when they are (else Latin-1)
    response = httpx.Response(429, headers=[(b"Retry-After", header.encode())])
    assert retry_after(response, now=NOW) == seconds
    outcome = classify(response)  # the sinks' path (against the clock): it must not raise
    assert outcome.status is Status.RETRY
    assert (outcome.retry_after_s is None) is (seconds is None)


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


class Answers(Sink[SinkConfig]):
    """Answers each message of a batch with the next outcome given (a sink double)."""

    sink_type = "answers"
    config_model = SinkConfig

    def __init__(self, config: SinkConfig, outcomes: list[Outcome]) -> None:
        super().__init__(config)
        self.outcomes = outcomes

    async def send(self, messages: Sequence[OutputMessage]) -> list[Outcome]:
        return self.outcomes[: len(messages)]


async def test_a_retry_after_past_max_age_dead_letters_and_the_batch_is_still_recorded(
    committed_db: str,
) -> None:
    """A server may ask for any delay (a sink's Retry-After of 1e20 s, or infinity): one it cannot
    be granted within max age is a dead letter at once. Computing its next time first overflowed
    datetime, which rolled back the whole batch's outcomes: that row was neither rescheduled nor
    dead-lettered, and the batch's delivered messages went out again when their claims ran out."""
    engine = make_engine(committed_db)
    sessions = make_session_factory(engine)
    config = SinkConfig(name="answers", group_by=("finding",), batch_size=10, max_age_s=3600)
    outcomes = [
        Outcome(Status.DELIVERED, "200"),
        Outcome(Status.RETRY, "HTTP 429: wait 1e20 s", 1e20),
        Outcome(Status.RETRY, "HTTP 503: forever", math.inf),
        Outcome(Status.RETRY, "HTTP 429: wait 600 s", 600.0),  # within max age: rescheduled
    ]
    try:
        async with sessions.begin() as session:
            findings = [make_finding() for _ in outcomes]
            await enqueue(session, [config], findings, cluster_id="c", now=datetime.now(UTC))
        worker = SinkDelivery(Answers(config, outcomes), sessions)
        rows = await worker.claim(10)
        assert len(rows) == len(outcomes)
        before = datetime.now(UTC)
        await worker.deliver(rows)
        async with sessions() as session:
            queue = {
                r.message_id: r
                for r in await session.scalars(select(OutputQueueRow).where(OutputQueueRow.sink == "answers"))
            }
            dead = {
                r.message_id: r
                for r in await session.scalars(select(DeadLetterRow).where(DeadLetterRow.sink == "answers"))
            }
        delivered, huge, endless, later = (r.message_id for r in rows)
        assert queue[delivered].state == "delivered"
        assert {huge, endless} == set(dead)
        assert {d.reason for d in dead.values()} == {"max age reached while retrying"}
        assert dead[huge].last_error == "HTTP 429: wait 1e20 s"
        wait = (queue[later].next_attempt_at - before).total_seconds()
        assert queue[later].state == "pending"
        assert 599 <= wait <= 660
    finally:
        await engine.dispose()


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
