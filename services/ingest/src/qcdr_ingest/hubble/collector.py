"""Follow Hubble Relay and store its flows as events (``QCDR_HUBBLE_RELAY_ADDRESS``).

One replica at a time holds the stream (a PostgreSQL advisory lock, held while it streams; the
others try again every ``retry_s``). Flows are converted by the ``hubble`` adapter, the same as
``POST /v1/events/hubble``, and stored in micro-batches (``batch_max`` flows, or what arrived
within ``batch_wait_s``) with the watermark, the time of the latest flow stored or ignored (not
of one refused, nor beyond the clock plus ``max_future``), in the same transaction. A new stream
asks Relay for the flows since the watermark minus ``overlap`` (what was read but maybe not
stored when the last one broke; event ids make re-reading harmless), and no further back than
``backfill``: Relay only replays what its agents' ring buffers still hold.

A broken stream is reopened after a delay that doubles from ``retry_s`` up to ``retry_max_s``,
and starts again from ``retry_s`` once a stream has delivered: a reconnect loop around a
long-lived stream, where an attempt counter (tenacity's) would keep growing across good hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from prometheus_client import Counter, Gauge
from qcdr_common.logging import get_logger
from qcdr_common.streams.runner import wait_any
from qcdr_ingest.db.locks import LockLostError, Singleton, singleton
from qcdr_ingest.events import repository, service
from qcdr_ingest.events.metrics import ITEMS_RECEIVED, count_outcomes
from qcdr_ingest.events.registry import Adapter
from qcdr_ingest.hubble import relay
from qcdr_ingest.hubble._proto import flow_pb2, observer_pb2
from qcdr_ingest.qualys.watermarks import get_watermark, set_watermark
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

log = get_logger(__name__)

WATERMARK = "hubble-relay"
LOCK = "qcdr-ingest-hubble-relay"
SOURCE = "hubble"

CONNECTED = Gauge("qcdr_ingest_hubble_connected", "1 while this replica follows Hubble Relay.")
RECONNECTS = Counter("qcdr_ingest_hubble_reconnects_total", "Hubble Relay streams reopened after a failure.")
LOST = Counter(
    "qcdr_ingest_hubble_lost_events_total",
    "Flows Hubble reported lost before they reached Relay (its ring buffers or queues overflowed).",
    ["source"],
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class HubbleCollector:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    adapter: Adapter
    target: relay.RelayTarget
    cluster_id: str
    service_name: str = "ingest"
    notify: Callable[[], None] = lambda: None
    reputation_fresh_s: float | None = None  # AbuseIPDB on: queue new destinations (insert_events)
    max_future: timedelta = service.MAX_FUTURE  # flows stamped further ahead are refused
    batch_max: int = 1000
    batch_wait_s: float = 0.5
    overlap: timedelta = timedelta(seconds=10)
    backfill: timedelta = timedelta(minutes=5)
    retry_s: float = 1.0
    retry_max_s: float = 60.0
    lock_check_s: float = 10.0  # how often a follower checks that it still holds the lock
    clock: Callable[[], datetime] = utc_now
    stored: int = field(default=0, init=False)  # events stored by this collector (tests, logs)
    _delivered: bool = field(default=False, init=False)  # the current stream stored a batch

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.retry_s
        while not stop.is_set():
            self._delivered = False
            try:
                async with singleton(self.engine, LOCK) as held:
                    if held:
                        await self._follow(stop, held)
            except LockLostError as exc:
                RECONNECTS.inc()
                log.warning("hubble_collector_lock_lost", error=str(exc))
            except (grpc.aio.AioRpcError, OSError) as exc:
                RECONNECTS.inc()
                code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                log.warning("hubble_relay_stream_failed", address=self.target.address, code=code)
            except Exception as exc:  # PostgreSQL away, mostly: the stream is re-read from the watermark
                RECONNECTS.inc()
                log.warning("hubble_collector_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                CONNECTED.set(0)
            if stop.is_set():
                break
            delay = self.retry_s if self._delivered else min(delay * 2, self.retry_max_s)
            with contextlib.suppress(TimeoutError):
                # jitter: replicas and restarts do not all come back in the same instant
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.8, 1.2))

    async def _since(self) -> datetime:
        floor = self.clock() - self.backfill
        async with self.sessions() as session:
            row = await get_watermark(session, WATERMARK)
        return floor if row is None else max(row.watermark - self.overlap, floor)

    async def _follow(self, stop: asyncio.Event, lock: Singleton | None = None) -> None:
        """Stream until Relay ends it, it fails (raised), ``stop``, or ``lock`` is lost (raised)."""
        since = await self._since()
        async with relay.channel(self.target) as ch:
            queue: asyncio.Queue[observer_pb2.GetFlowsResponse] = asyncio.Queue(self.batch_max * 4)
            reader = asyncio.create_task(self._read(relay.follow(ch, since), queue))
            stopping = asyncio.create_task(self._until_stopped(stop, lock))
            CONNECTED.set(1)
            log.info("hubble_relay_following", address=self.target.address, since=since.isoformat())
            try:
                ended = False
                while not ended and not stop.is_set():
                    batch, ended = await self._gather(queue, reader, stopping)
                    if batch:
                        self._delivered = True
                        await self._store(batch)
                if stopping.done() and not stopping.cancelled() and (lost := stopping.exception()):
                    raise lost
            finally:
                stopping.cancel()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader  # re-raises the stream's failure, if that is what ended it

    async def _until_stopped(self, stop: asyncio.Event, lock: Singleton | None) -> None:
        """Returns on ``stop``; raises :class:`LockLostError` when ``lock`` is found gone."""
        while True:
            await wait_any(stop, seconds=self.lock_check_s)
            if stop.is_set():
                return
            if lock is not None:
                await lock.verify()

    @staticmethod
    async def _read(stream: Any, queue: asyncio.Queue[observer_pb2.GetFlowsResponse]) -> None:
        async for response in stream:
            await queue.put(response)

    async def _gather(
        self,
        queue: asyncio.Queue[observer_pb2.GetFlowsResponse],
        reader: asyncio.Task[None],
        stopping: asyncio.Task[Any],
    ) -> tuple[list[observer_pb2.GetFlowsResponse], bool]:
        """Up to ``batch_max`` responses: waits for the first, then ``batch_wait_s`` for more.
        Ended (True) when the stream is over and everything it delivered was taken, or on stop."""
        batch: list[observer_pb2.GetFlowsResponse] = []
        while queue.empty():
            if reader.done() or stopping.done():
                return batch, True
            first = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({first, reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if first in done:
                batch.append(first.result())
                break
            # a cancelled get() takes nothing: what the reader queued before it ended stays
            first.cancel()
        if not batch:
            batch.append(queue.get_nowait())
        deadline = asyncio.get_running_loop().time() + self.batch_wait_s
        while len(batch) < self.batch_max:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                batch.append(
                    queue.get_nowait()
                    if not queue.empty()
                    else await asyncio.wait_for(queue.get(), max(remaining, 0))
                )
            except TimeoutError:
                break
        return batch, False

    async def _store(self, batch: list[observer_pb2.GetFlowsResponse]) -> None:
        items: list[dict[str, Any]] = []
        times: list[datetime | None] = []  # each item's flow time
        for response in batch:
            which = response.WhichOneof("response_types")
            if which == "lost_events":
                lost = response.lost_events
                source = _lost_source(lost.source)
                LOST.labels(source=source).inc(lost.num_events_lost)
                log.warning("hubble_lost_events", source=source, lost=lost.num_events_lost)
                continue
            if which != "flow":
                continue
            items.append(relay.as_json(response))
            times.append(
                response.flow.time.ToDatetime(tzinfo=UTC) if response.flow.HasField("time") else None
            )
        if not items:
            return
        converted, prepared = service.prepare(
            self.adapter,
            service.Batch(items),
            self.cluster_id,
            default_cluster=self.cluster_id,
            max_future=self.max_future,
        )
        latest = self._latest(times, converted.rejected)
        async with self.sessions() as session:
            stored = await repository.insert_events(
                session, prepared.rows, service=self.service_name, reputation_fresh_s=self.reputation_fresh_s
            )
            if latest is not None:
                counts = {"flows": len(items), "stored": stored, "ignored": converted.ignored}
                await set_watermark(session, WATERMARK, latest, self.clock(), counts)
            await session.commit()
        if stored:
            self.notify()
        self.stored += stored
        accepted = len(converted.events) + converted.repeated
        ITEMS_RECEIVED.labels(source=SOURCE).inc(len(items))
        count_outcomes(
            SOURCE,
            stored=stored,
            duplicates=accepted - stored,
            rejected=len(converted.rejected),
            ignored=converted.ignored,
        )
        if converted.rejected:
            reasons = Tally(r.reason for r in converted.rejected)
            log.warning(
                "hubble_flows_rejected", count=len(converted.rejected), reasons=dict(reasons.most_common(5))
            )

    def _latest(self, times: list[datetime | None], rejected: list[service.Rejection]) -> datetime | None:
        """The watermark a batch moves to: its newest flow that was stored (or already known) or
        deliberately ignored. A refused flow does not count: one stamped ahead by a node whose clock
        runs fast would make the next stream ask Relay for flows *since then*, and every flow until
        then would never be read. Nor does anything beyond the clock plus ``max_future``."""
        refused = {r.index for r in rejected}
        bound = self.clock() + self.max_future
        kept = [t for i, t in enumerate(times) if t is not None and i not in refused and t <= bound]
        return max(kept, default=None)


def _lost_source(value: int) -> str:
    try:
        return str(flow_pb2.LostEventSource.Name(value))
    except ValueError:
        return str(value)
