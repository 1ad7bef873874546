"""The outputs of one response process: the configured sinks, a delivery loop each, the queueing
hook the findings handler calls in its transaction, and the purge of old delivered rows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.logging import get_logger
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response.outputs import grouping
from qcdr_response.outputs.base import Sink, SinkConfig
from qcdr_response.outputs.config import load_outputs
from qcdr_response.outputs.delivery import SinkDelivery, purge_delivered
from qcdr_response.outputs.registry import load_sinks
from qcdr_response.settings import ResponseSettings

log = get_logger(__name__)


def make_sink(config: SinkConfig) -> Sink[Any]:
    cls = load_sinks().get(str(getattr(config, "type", "")))
    return cls(config)


def link_for(settings: ResponseSettings) -> Any:
    base = (settings.console_url or "").rstrip("/")

    def link(finding: Finding) -> str | None:
        return f"{base}/ui/findings/{finding.id}" if base else None

    return link


class OutputsRuntime:
    def __init__(
        self,
        settings: ResponseSettings,
        sessions: async_sessionmaker[AsyncSession],
        configs: Sequence[SinkConfig] | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.configs = list(configs if configs is not None else load_outputs(settings.outputs_file))
        self.sinks = {c.name: make_sink(c) for c in self.configs}
        self.deliveries = {
            name: SinkDelivery(
                sink, sessions, poll_s=settings.outputs_poll_s, redis=redis, prefix=settings.redis_prefix
            )
            for name, sink in self.sinks.items()
        }
        self.link = link_for(settings)

    async def enqueue(self, session: AsyncSession, findings: list[Finding]) -> int:
        """In the findings batch's transaction: queue messages for every sink that wants them."""
        if not self.configs:
            return 0
        return await grouping.enqueue(
            session,
            self.configs,
            findings,
            cluster_id=self.settings.cluster_id,
            now=datetime.now(UTC),
            link_for=self.link,
        )

    def notify(self) -> None:
        for d in self.deliveries.values():
            d.notify()

    async def purge_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.outputs_retention_s)
                async with self.sessions.begin() as session:
                    removed = await purge_delivered(session, cutoff)
                if removed:
                    log.info("delivered output messages purged", rows=removed)
            except Exception:
                log.exception("purging delivered output messages failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=3600)

    def loops(self) -> list[Any]:
        return [d.run for d in self.deliveries.values()] + ([self.purge_loop] if self.deliveries else [])

    async def aclose(self) -> None:
        for sink in self.sinks.values():
            await sink.aclose()
