"""The consumer-group loop every service runs: at-least-once, micro-batched, poison-isolating.

Order of work: this consumer's own pending entries first (what it read before a crash or restart),
then, every ``claim_idle_ms / 2``, entries idle longer than ``claim_idle_ms`` in any consumer's
pending list (``XAUTOCLAIM``: a crashed pod's work), and otherwise new entries. The handler gets a
whole micro-batch; if it raises, the batch is retried message by message so one poison message
cannot hold back the others. A message that failed ``max_deliveries`` times (or was delivered more
often than that, e.g. because it crashed the process) goes to ``<stream>:dlq`` with its original
fields and the error, and is acknowledged. Handlers must therefore be idempotent.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from structlog.contextvars import bound_contextvars

from qcdr_common.logging import get_logger
from qcdr_common.settings import CommonSettings
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.metrics import (
    BATCH_SECONDS,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_FAILED,
    MESSAGES_HANDLED,
)
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.runner import wait_any

log = get_logger(__name__)

# The last error of a message that failed but stays pending, kept in Redis so that whichever
# consumer finally dead-letters it (maybe another pod, after a claim) can attach the error.
ERROR_TTL_S = 7 * 24 * 3600
DLQ_MAXLEN = 100_000
_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Delivery:
    entry_id: str
    envelope: Envelope
    deliveries: int  # 1 on first delivery; > 1 means a retry, so the handler may have seen it


BatchHandler = Callable[[list[Delivery]], Awaitable[None]]
_Entry = tuple[str, Mapping[bytes, bytes] | None]  # (entry id, fields; None if trimmed meanwhile)


@contextmanager
def delivery_context(delivery: Delivery) -> Iterator[None]:
    """Bind the envelope's ids to every log line inside (structlog contextvars)."""
    env = delivery.envelope
    with bound_contextvars(
        correlation_id=env.correlation_id,
        envelope_id=env.id,
        envelope_type=env.type,
        entry_id=delivery.entry_id,
    ):
        yield


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _format_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:_MAX_ERROR_CHARS]


# The batch's entries (ARGV[3..]) still pending on this consumer (ARGV[2]) are claimed again by it
# with JUSTID: their idle time restarts and their delivery counts stay. Only the batch: older
# entries that failed wait out their idle time to be retried. One script, so an entry another
# consumer has just claimed is not taken back. Chunks of 500 keep unpack() within Lua's stack.
_TOUCH = """
local mine = {}
for i = 3, #ARGV do
    local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
    if entry and entry[2] == ARGV[2] then mine[#mine + 1] = ARGV[i] end
end
for i = 1, #mine, 500 do
    local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
    for j = i, math.min(i + 499, #mine) do args[#args + 1] = mine[j] end
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
end
return #mine
"""


# How often a closed gate is asked again.
GATE_POLL_S = 0.05


class StreamConsumer:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        stream: str,
        group: str,
        consumer: str,
        handler: BatchHandler,
        batch: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        error_backoff_s: float = 1.0,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        """``gate``: asked before each read; while it answers False nothing is read or claimed
        (a leader whose lease may have run out while it was stalled, leader.py)."""
        if batch < 1 or block_ms < 1 or claim_idle_ms < 1 or max_deliveries < 1:
            raise ValueError("batch, block_ms, claim_idle_ms and max_deliveries must be >= 1")
        self.redis = redis
        self.prefix = prefix
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.error_backoff_s = error_backoff_s
        self.gate = gate
        self.key = stream_key(prefix, stream)
        self.dlq = dlq_key(prefix, stream)
        self._claim_interval_s = max(0.01, claim_idle_ms / 2000)
        self._touch = redis.register_script(_TOUCH)
        self._labels = {"stream": stream, "group": group}

    @classmethod
    def from_settings(
        cls,
        redis: Redis,
        settings: CommonSettings,
        *,
        stream: str,
        group: str,
        handler: BatchHandler,
        gate: Callable[[], bool] | None = None,
    ) -> StreamConsumer:
        """A consumer with the prefix, consumer name and tuning from ``settings``."""
        return cls(
            redis,
            prefix=settings.redis_prefix,
            stream=stream,
            group=group,
            consumer=settings.consumer_name,
            handler=handler,
            batch=settings.stream_batch,
            block_ms=settings.stream_block_ms,
            claim_idle_ms=settings.stream_claim_idle_ms,
            max_deliveries=settings.stream_max_deliveries,
            gate=gate,
        )

    async def ensure_group(self) -> None:
        """Create the group at the start of the stream (entries published before the first
        consumer started are still consumed); creating an existing group is a no-op."""
        try:
            await self.redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and acknowledged first.

        ``stop`` is checked between batches and a blocking read lasts at most ``block_ms``, so the
        loop returns within ``block_ms`` plus one batch's handling time.
        """
        with bound_contextvars(stream=self.stream, group=self.group, consumer=self.consumer):
            log.info("consumer started")
            pending_done = False
            claim_cursor = "0-0"
            next_claim = 0.0
            while not stop.is_set():
                if self.gate is not None and not self.gate():
                    await wait_any(stop, seconds=GATE_POLL_S)
                    continue
                try:
                    if not pending_done:
                        await self.ensure_group()
                        pending_done = await self._drain_own_pending(stop)
                        continue
                    now = time.monotonic()
                    if now >= next_claim:
                        claim_cursor, claimed = await self._autoclaim(claim_cursor)
                        if claim_cursor == "0-0":  # scan complete: the next one after a pause
                            next_claim = now + self._claim_interval_s
                        if claimed:
                            await self._process(claimed, await self._delivery_counts(claimed))
                            continue
                    block = max(1, min(self.block_ms, int((next_claim - time.monotonic()) * 1000)))
                    entries = await self._read(">", block)
                    if entries:
                        await self._process(entries, {})
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):  # stream deleted under us: recreate, re-read pending
                        log.warning("consumer group vanished, recreating")
                        pending_done = False
                        continue
                    log.exception("consumer loop error")
                    await wait_any(stop, seconds=self.error_backoff_s)
                except Exception:  # Redis away: back off; unacked entries stay pending
                    log.exception("consumer loop error")
                    await wait_any(stop, seconds=self.error_backoff_s)
            log.info("consumer stopped")

    async def _drain_own_pending(self, stop: asyncio.Event) -> bool:
        """Handle what this consumer read but never acknowledged (a previous life's batch)."""
        cursor = "0"
        while not stop.is_set():
            entries = await self._read(cursor, None)
            if not entries:
                return True
            cursor = entries[-1][0]
            log.info("re-handling own pending entries", count=len(entries))
            await self._process(entries, await self._delivery_counts(entries))
        return False

    async def _read(self, entry_id: str, block: int | None) -> list[_Entry]:
        response = await self.redis.xreadgroup(
            self.group, self.consumer, {self.key: entry_id}, count=self.batch, block=block
        )
        if not response:
            return []
        # RESP2 gives [[key, entries]], RESP3 {key: [entries]}
        groups = response.values() if isinstance(response, dict) else (item[1] for item in response)
        entries: list[_Entry] = []
        for batch in groups:
            for raw in batch:
                entries.append(_entry(raw))
        return entries

    async def _autoclaim(self, cursor: str) -> tuple[str, list[_Entry]]:
        response = await self.redis.xautoclaim(
            self.key,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=cursor,
            count=self.batch,
        )
        next_cursor, raw_entries = _text(response[0]), response[1]
        # Redis 7 drops entries deleted from the stream from the PEL itself and lists them third.
        if len(response) > 2 and response[2]:
            log.warning("claimed entries were trimmed from the stream", count=len(response[2]))
        entries = [_entry(raw) for raw in raw_entries]
        if entries:
            log.info("claimed idle entries", count=len(entries))
        return next_cursor, entries

    async def _delivery_counts(self, entries: Sequence[_Entry]) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(self.key, self.group, min=entry_id, max=entry_id, count=1)
            results = await pipe.execute()
        counts: dict[str, int] = {}
        for (entry_id, _), rows in zip(entries, results, strict=True):
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

    async def _process(self, entries: Sequence[_Entry], counts: Mapping[str, int]) -> None:
        started = time.perf_counter()
        ack: list[str] = []
        dead: list[tuple[str, Mapping[bytes, bytes], str, int]] = []
        deliveries: list[Delivery] = []
        for entry_id, fields in entries:
            n = counts.get(entry_id, 1)
            if fields is None:  # trimmed or deleted while pending: nothing left to handle
                ack.append(entry_id)
                continue
            try:
                envelope = Envelope.from_fields(fields)
            except Exception as exc:
                dead.append((entry_id, fields, f"invalid envelope: {_format_error(exc)}", n))
                continue
            if n > self.max_deliveries:  # it never failed cleanly: it probably killed a consumer
                dead.append((entry_id, fields, "", n))
                continue
            deliveries.append(Delivery(entry_id, envelope, n))

        if deliveries:
            finished = asyncio.Event()
            keeper = asyncio.create_task(self._keep_claimed(finished, [d.entry_id for d in deliveries]))
            try:
                ok, failed = await self._handle(deliveries)
            finally:
                finished.set()
                await keeper
            ack.extend(d.entry_id for d in ok)
            for d, error in failed:
                if d.deliveries >= self.max_deliveries:
                    dead.append((d.entry_id, d.envelope.to_fields(), error, d.deliveries))
            retry = [(d, e) for d, e in failed if d.deliveries < self.max_deliveries]
            if retry:
                await self._remember_errors(retry)

        if ack:
            await self.redis.xack(self.key, self.group, *ack)
        if dead:
            await self._dead_letter(dead)
        handled = len(ack)
        if handled:
            MESSAGES_HANDLED.labels(**self._labels).inc(handled)
        BATCH_SECONDS.labels(**self._labels).observe(time.perf_counter() - started)

    async def _keep_claimed(self, handled: asyncio.Event, entry_ids: Sequence[str]) -> None:
        """While a batch is handled, reset its entries' idle time every third of ``claim_idle_ms``.

        Reclaiming idle entries is for consumers that died; without this, a live replica's slow
        batch (actions waiting on the cluster, a sink's retries) would be claimed by another
        replica after ``claim_idle_ms`` and handled twice at once, and bouncing between replicas
        would count deliveries until it reached the dead-letter stream. ``XCLAIM … JUSTID`` by
        the owner resets the idle time without counting a delivery.
        """
        interval = self.claim_idle_ms / 3000
        while True:
            await wait_any(handled, seconds=interval)
            if handled.is_set():
                return
            try:
                await self._touch(keys=[self.key], args=[self.group, self.consumer, *entry_ids])
            except Exception as exc:  # Redis away: the batch goes on; the entries may be claimed
                log.warning("could not keep the batch's entries claimed", error=repr(exc))

    async def _handle(self, deliveries: list[Delivery]) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
        """Run the handler on the batch; on failure, one by one. Returns (ok, [(failed, error)])."""
        try:
            if len(deliveries) == 1:
                with delivery_context(deliveries[0]):
                    await self.handler(deliveries)
            else:
                with bound_contextvars(batch_size=len(deliveries)):
                    await self.handler(deliveries)
            return deliveries, []
        except Exception as exc:
            if len(deliveries) == 1:
                with delivery_context(deliveries[0]):
                    log.warning(
                        "handler failed", error=_format_error(exc), deliveries=deliveries[0].deliveries
                    )
                MESSAGES_FAILED.labels(**self._labels).inc()
                return [], [(deliveries[0], _format_error(exc))]
            log.warning(
                "batch handler failed, retrying one by one", batch_size=len(deliveries), error=repr(exc)
            )
        ok: list[Delivery] = []
        failed: list[tuple[Delivery, str]] = []
        for d in deliveries:
            with delivery_context(d):
                try:
                    await self.handler([d])
                except Exception as exc:
                    MESSAGES_FAILED.labels(**self._labels).inc()
                    log.warning("handler failed", error=_format_error(exc), deliveries=d.deliveries)
                    failed.append((d, _format_error(exc)))
                else:
                    ok.append(d)
        return ok, failed

    def _error_key(self, entry_id: str) -> str:
        return f"{self.key}:errors:{self.group}:{entry_id}"

    async def _remember_errors(self, failed: Sequence[tuple[Delivery, str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for d, error in failed:
                pipe.set(self._error_key(d.entry_id), error, ex=ERROR_TTL_S)
            await pipe.execute()

    async def _dead_letter(self, dead: Sequence[tuple[str, Mapping[bytes, bytes], str, int]]) -> None:
        missing = [entry_id for entry_id, _, error, _ in dead if not error]
        remembered: dict[str, str] = {}
        if missing:
            values = await self.redis.mget([self._error_key(i) for i in missing])
            remembered = {i: _text(v) for i, v in zip(missing, values, strict=True) if v is not None}
        failed_at = datetime.now(UTC).isoformat()
        # XADD to the DLQ and XACK in one MULTI: never acknowledged without being dead-lettered
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, error, n in dead:
                reason = error or remembered.get(
                    entry_id, f"delivered {n} times without being acknowledged (did it crash the consumer?)"
                )
                letter: dict[Any, Any] = dict(fields)
                letter.update(
                    {
                        b"error": reason,
                        b"entry_id": entry_id,
                        b"stream": self.stream,
                        b"group": self.group,
                        b"consumer": self.consumer,
                        b"deliveries": n,
                        b"failed_at": failed_at,
                    }
                )
                pipe.xadd(self.dlq, letter, maxlen=DLQ_MAXLEN, approximate=True)
                pipe.xack(self.key, self.group, entry_id)
                pipe.delete(self._error_key(entry_id))
            await pipe.execute()
        MESSAGES_DEAD_LETTERED.labels(**self._labels).inc(len(dead))
        for entry_id, _, _, n in dead:
            log.error("message dead-lettered", entry_id=entry_id, deliveries=n, dlq=self.dlq)


def _entry(raw: Any) -> _Entry:
    entry_id, fields = raw[0], raw[1]
    return _text(entry_id), (fields or None)
