"""Prometheus metrics for streams and outboxes, and a task that samples group lag.

Counters are incremented by the consumer loop and the relay; gauges are sampled by
:class:`LagExporter` (one Redis round trip per stream every few seconds). ``stream`` labels carry
the stream name without the key prefix, so dashboards do not depend on the deployment's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from qcdr_common.logging import get_logger
from qcdr_common.streams.names import stream_key

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncEngine

log = get_logger(__name__)

STREAM_LAG = Gauge(
    "qcdr_stream_lag",
    "Entries in the stream not yet delivered to the group (XINFO GROUPS lag; pending if unknown).",
    ["stream", "group"],
)
STREAM_PENDING = Gauge(
    "qcdr_stream_pending", "Entries delivered to the group but not yet acknowledged.", ["stream", "group"]
)
STREAM_LENGTH = Gauge("qcdr_stream_length", "Entries in the stream (XLEN).", ["stream"])
MESSAGES_HANDLED = Counter(
    "qcdr_stream_messages_handled_total", "Entries handled and acknowledged.", ["stream", "group"]
)
MESSAGES_FAILED = Counter(
    "qcdr_stream_messages_failed_total",
    "Handler failures for single entries (each retry counts).",
    ["stream", "group"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "qcdr_stream_messages_dead_lettered_total",
    "Entries moved to the dead-letter stream.",
    ["stream", "group"],
)
BATCH_SECONDS = Histogram(
    "qcdr_stream_batch_seconds", "Time to handle and acknowledge one micro-batch.", ["stream", "group"]
)
OUTBOX_BACKLOG = Gauge("qcdr_outbox_backlog", "Outbox rows not yet published.", ["table"])
OUTBOX_PUBLISHED = Counter("qcdr_outbox_published_total", "Outbox rows published to Redis.", ["table"])


@dataclass(frozen=True, slots=True)
class GroupInfo:
    lag: int | None  # None when Redis cannot tell (e.g. after XDEL or trimming past the group)
    pending: int
    length: int


async def group_info(redis: Redis, key: str, group: str) -> GroupInfo | None:
    """The group's lag and pending count, or None if the stream or group does not exist."""
    try:
        groups: list[dict[Any, Any]] = await redis.xinfo_groups(key)
    except ResponseError:  # no such key
        return None
    for g in groups:
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = g.get("lag")
            return GroupInfo(
                lag=None if lag is None else int(lag),
                pending=int(g.get("pending") or 0),
                length=await redis.xlen(key),
            )
    return None


class LagExporter:
    """Samples group lag/pending for ``(stream name, group)`` pairs and outbox backlogs every
    ``interval_s`` until stopped; a failed sample is logged and skipped, never fatal."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        groups: Sequence[tuple[str, str]] = (),
        outboxes: Sequence[tuple[AsyncEngine, Table]] = (),
        interval_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.groups = list(groups)
        self.outboxes = list(outboxes)
        self.interval_s = interval_s

    async def sample(self) -> None:
        for name, group in self.groups:
            info = await group_info(self.redis, stream_key(self.prefix, name), group)
            if info is None:
                continue
            STREAM_LAG.labels(stream=name, group=group).set(info.pending if info.lag is None else info.lag)
            STREAM_PENDING.labels(stream=name, group=group).set(info.pending)
            STREAM_LENGTH.labels(stream=name).set(info.length)
        if self.outboxes:
            from qcdr_common.streams.outbox import outbox_backlog  # outbox imports this module

            for engine, table in self.outboxes:
                OUTBOX_BACKLOG.labels(table=table.name).set(await outbox_backlog(engine, table))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:
                log.warning("stream metrics sample failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
