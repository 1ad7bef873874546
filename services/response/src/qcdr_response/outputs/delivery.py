"""One sink's delivery loop: claim due messages, send them in batches, record each outcome.

Claims are timestamps, not held locks: a batch is claimed (``claimed_until``, attempts + 1) and
committed before the request, so no database lock is held while a sink is slow, and a crash
releases the claim when it expires: the message goes out again with the same id (the
idempotency key). Backoff is exponential with full jitter, or the server's ``Retry-After`` when
longer; a message that cannot be delivered within ``max_age_s``, or that the sink refuses for
good, moves to the dead letters. Every sink has its own loop, rate limit and concurrency, so one
failing sink never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from qcdr_common.logging import get_logger
from qcdr_common.streams.runner import wait_any
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from qcdr_response.outputs.base import Outcome, Sink, Status
from qcdr_response.outputs.message import OutputMessage
from qcdr_response.outputs.metrics import DEAD_LETTERED, DELIVERY_SECONDS, FAILED, RETRIED, SENT
from qcdr_response.outputs.models import DeadLetterRow, OutputQueueRow

log = get_logger(__name__)


def backoff_s(
    attempts: int, initial_s: float, max_s: float, retry_after_s: float | None, rng: random.Random
) -> float:
    """Full jitter (a uniform draw up to the exponential cap), never shorter than Retry-After."""
    # the exponent stops at 64 (no backoff_max_s is that far): 2 ** 1024 is too large for a float,
    # and a message retried for a week at a 300 s cap has been tried 2000 times
    cap = min(max_s, initial_s * (2 ** min(max(0, attempts - 1), 64)))
    delay = rng.uniform(0, cap)
    return max(delay, retry_after_s or 0.0)


class TokenBucket:
    """At most ``rate`` messages per second on average, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            need = min(float(n), self.capacity)
            if self.tokens >= need:
                self.tokens -= need
                return
            await asyncio.sleep((need - self.tokens) / self.rate)


# One bucket for every replica, in a Redis hash (tokens, stamp), refilled by Redis' own clock.
# Returns the seconds to wait before ``need`` tokens are there (0: taken), as text: Lua numbers
# returned to Redis are truncated to integers.
_SHARED_TAKE = """
local rate, capacity, need = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= need then tokens = tokens - need else wait = (need - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(wait)
"""


class SharedTokenBucket(TokenBucket):
    """:class:`TokenBucket` shared by the service's replicas (a sink's ``rate_per_s`` is the
    receiver's limit, whatever the number of senders). While Redis does not answer it is this
    process's own bucket, asking Redis again after ``retry_s``."""

    def __init__(self, rate: float, redis: Redis, key: str, *, retry_s: float = 10.0) -> None:
        super().__init__(rate)
        self.key = key
        self.retry_s = retry_s
        self._take = redis.register_script(_SHARED_TAKE)
        self._local_until = 0.0

    async def take(self, n: int) -> None:
        need = min(float(n), self.capacity)
        while True:
            if time.monotonic() < self._local_until:
                await super().take(n)
                return
            try:
                wait = float(await self._take(keys=[self.key], args=[self.rate, self.capacity, need]))
            except RedisError as exc:
                log.warning("shared rate limit unavailable, using this replica's", error=repr(exc))
                self._local_until = time.monotonic() + self.retry_s
                continue
            if wait <= 0:
                return
            await asyncio.sleep(wait)


class SinkDelivery:
    def __init__(
        self,
        sink: Sink[Any],
        sessions: async_sessionmaker[AsyncSession],
        *,
        poll_s: float = 1.0,
        rng: random.Random | None = None,
        redis: Redis | None = None,
        prefix: str = "",
    ) -> None:
        """``redis``: share the sink's rate limit with the other replicas (else per process)."""
        self.sink = sink
        self.config = sink.config
        self.sessions = sessions
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self.wake = asyncio.Event()
        self.bucket: TokenBucket | None = None
        if self.config.rate_per_s and redis is not None:
            key = f"response:outputs:{self.config.name}:rate"
            self.bucket = SharedTokenBucket(
                self.config.rate_per_s, redis, f"{prefix}:{key}" if prefix else key
            )
        elif self.config.rate_per_s:
            self.bucket = TokenBucket(self.config.rate_per_s)
        # long enough for a request, its timeout and (Splunk) acknowledgement polling
        self.claim_for = timedelta(seconds=self.config.timeout_s * 3 + 2)

    def notify(self) -> None:
        self.wake.set()

    async def claim(self, limit: int) -> list[OutputQueueRow]:
        now = datetime.now(UTC)
        earlier = aliased(OutputQueueRow)
        async with self.sessions.begin() as session:
            due = (
                select(OutputQueueRow.id)
                .where(
                    OutputQueueRow.sink == self.config.name,
                    OutputQueueRow.state == "pending",
                    OutputQueueRow.next_attempt_at <= now,
                    or_(OutputQueueRow.claimed_until.is_(None), OutputQueueRow.claimed_until < now),
                    # a resolve waits for its group's earlier messages: PagerDuty drops a resolve
                    # that arrives before its trigger, which would leave the incident open
                    or_(
                        OutputQueueRow.kind != "resolve",
                        ~exists().where(
                            earlier.sink == OutputQueueRow.sink,
                            earlier.group_key == OutputQueueRow.group_key,
                            earlier.id < OutputQueueRow.id,
                            earlier.state == "pending",
                        ),
                    ),
                )
                # the partial index (sink, next_attempt_at) serves this order with the LIMIT, no sort
                .order_by(OutputQueueRow.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = (
                await session.scalars(
                    update(OutputQueueRow)
                    .where(OutputQueueRow.id.in_(due.scalar_subquery()))
                    .values(claimed_until=now + self.claim_for, attempts=OutputQueueRow.attempts + 1)
                    .returning(OutputQueueRow)
                    .execution_options(synchronize_session=False)
                )
            ).all()
        return sorted(rows, key=lambda r: (r.next_attempt_at, r.id))

    async def deliver(self, rows: Sequence[OutputQueueRow]) -> None:
        now = datetime.now(UTC)
        max_age = timedelta(seconds=self.config.max_age_s)
        live = [r for r in rows if r.created_at + max_age > now]
        expired = [r for r in rows if r.created_at + max_age <= now]
        outcomes: list[Outcome] = []
        if live:
            messages = [OutputMessage.model_validate(r.payload) for r in live]
            if self.bucket is not None:
                await self.bucket.take(len(messages))
            keeper = asyncio.create_task(self._keep_claimed([r.id for r in live]))
            try:
                outcomes = await self.sink.send(messages)
            except Exception as exc:  # a sink bug must not lose messages: retry them
                log.exception("sink raised", sink=self.config.name)
                outcomes = [Outcome(Status.UNKNOWN, f"{type(exc).__name__}: {exc}")] * len(live)
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            if len(outcomes) != len(live):
                outcomes = [
                    Outcome(Status.UNKNOWN, "the sink answered for a different number of messages")
                ] * len(live)
        await self.record(live, outcomes, expired)

    async def _keep_claimed(self, ids: list[int]) -> None:
        """Extend the claim while the sink works on the batch: a send may outlast any fixed claim
        (Splunk HEC waits up to ``ack_timeout_s`` for indexing), and a claim that ran out would
        let another replica, or another slot of this one, post the same messages again. A crash
        stops the extensions, so the claim still expires and the rows come back."""
        every = self.claim_for.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                async with self.sessions.begin() as session:
                    await session.execute(
                        update(OutputQueueRow)
                        .where(OutputQueueRow.id.in_(ids), OutputQueueRow.state == "pending")
                        .values(claimed_until=datetime.now(UTC) + self.claim_for)
                    )
            except Exception:  # the database away: the claim may lapse, as after a crash
                log.warning("extending an output claim failed", sink=self.config.name, exc_info=True)

    async def record(
        self, rows: Sequence[OutputQueueRow], outcomes: Sequence[Outcome], expired: Sequence[OutputQueueRow]
    ) -> None:
        now = datetime.now(UTC)
        name = self.config.name
        async with self.sessions.begin() as session:
            for row in expired:
                await self._dead(
                    session, row, f"undelivered after max age ({self.config.max_age_s:g} s)", row.last_error
                )
            delivered = [r for r, o in zip(rows, outcomes, strict=True) if o.status == Status.DELIVERED]
            if delivered:  # one statement for the whole batch: the common case
                await session.execute(
                    update(OutputQueueRow)
                    .where(OutputQueueRow.id.in_([r.id for r in delivered]))
                    .values(state="delivered", delivered_at=now, claimed_until=None, last_error=None)
                )
                SENT.labels(name).inc(len(delivered))
                for row in delivered:
                    DELIVERY_SECONDS.labels(name).observe(max(0.0, (now - row.created_at).total_seconds()))
            for row, outcome in zip(rows, outcomes, strict=True):
                if outcome.status == Status.DELIVERED:
                    continue
                if outcome.status == Status.REJECTED:
                    FAILED.labels(name).inc()
                    await self._dead(session, row, "rejected by the sink", outcome.detail)
                else:
                    delay = backoff_s(
                        row.attempts,
                        self.config.backoff_initial_s,
                        self.config.backoff_max_s,
                        outcome.retry_after_s,
                        self.rng,
                    )
                    # decided before the next time is computed: a server's Retry-After can be
                    # anything, and a time past datetime's range raised here, which rolled back
                    # the whole batch's outcomes (the row neither rescheduled nor dead-lettered)
                    remaining_s = self.config.max_age_s - (now - row.created_at).total_seconds()
                    if not delay < remaining_s:
                        FAILED.labels(name).inc()
                        await self._dead(session, row, "max age reached while retrying", outcome.detail)
                        continue
                    nxt = now + timedelta(seconds=delay)
                    RETRIED.labels(name).inc()
                    await session.execute(
                        update(OutputQueueRow)
                        .where(OutputQueueRow.id == row.id)
                        .values(
                            next_attempt_at=nxt,
                            claimed_until=None,
                            last_outcome=outcome.status.value,
                            last_error=outcome.detail[:2000],
                        )
                    )

    async def _dead(
        self, session: AsyncSession, row: OutputQueueRow, reason: str, detail: str | None
    ) -> None:
        await session.execute(
            insert(DeadLetterRow)
            .values(
                message_id=row.message_id,
                sink=row.sink,
                kind=row.kind,
                group_key=row.group_key,
                payload=row.payload,
                attempts=row.attempts,
                reason=reason,
                last_error=(detail or "")[:2000] or None,
                created_at=row.created_at,
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
        )
        await session.execute(delete(OutputQueueRow).where(OutputQueueRow.id == row.id))
        DEAD_LETTERED.labels(self.config.name).inc()
        log.warning(
            "output dead-lettered", sink=row.sink, message_id=row.message_id, reason=reason, detail=detail
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and deliver until ``stop``; up to ``concurrency`` batches in flight."""
        slots = asyncio.Semaphore(self.config.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def one(rows: list[OutputQueueRow]) -> None:
            try:
                await self.deliver(rows)
            except Exception:  # the database may be away: the claims expire and the rows come back
                log.exception("delivery failed", sink=self.config.name)
            finally:
                slots.release()

        try:
            while not stop.is_set():
                await slots.acquire()
                try:
                    rows = await self.claim(self.config.batch_size)
                except Exception:
                    slots.release()
                    log.exception("claiming output messages failed", sink=self.config.name)
                    rows = []
                    await wait_any(stop, self.wake, seconds=self.poll_s)
                    self.wake.clear()
                    continue
                if not rows:
                    slots.release()
                    await wait_any(stop, self.wake, seconds=self.poll_s)
                    self.wake.clear()
                    continue
                task = asyncio.create_task(one(rows))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


async def purge_delivered(session: AsyncSession, older_than: datetime) -> int:
    """Delivered rows past the retention (they only serve grouping and the API meanwhile)."""
    result = await session.execute(
        delete(OutputQueueRow).where(
            and_(OutputQueueRow.state == "delivered", OutputQueueRow.delivered_at < older_than)
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
