"""Completes what an idle stream leaves waiting: the engine releases an event only when event time
has moved ``lateness`` past it, and with no new events it never would. When no batch came for a
while, the flusher processes the buffer in a transaction of its own (chains stored, checkpoint
written, then confirmed), under the same lock as the batches.

A new process (or a new lead, leader.py) loads the checkpoint with its first batch. When no fresh
event comes (a quiet cluster, or the previous leader consumed everything before it stopped), the
flusher loads it instead, or what the checkpoint holds would wait for an event that may never
come."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis.findings.service import BatchOutcome, DetectorSet, count_committed, store_findings

log = get_logger(__name__)


class CorrelationFlusher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        detectors: DetectorSet,
        *,
        cluster_id: str,
        idle_seconds: float,
        gate: Callable[[], bool] | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.gate = gate  # asked before a flush writes (the events consumer's gate)
        # no flush this soon after start: entries a crashed process read but never committed are
        # claimed back after the claim-idle time, and a flush before them would make them late
        self.hold_s = hold_s
        self.sessions = sessions
        self.detectors = detectors
        self.cluster_id = cluster_id
        self.idle_seconds = idle_seconds
        self.flushes = 0

    async def run(self, stop: asyncio.Event) -> None:
        correlator = self.detectors.correlator
        if correlator is None:
            return
        seen = correlator.engine.stats.events
        started = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.idle_seconds)
            now = correlator.engine.stats.events
            held = time.monotonic() - started < self.hold_s
            allowed = not held and (self.gate is None or self.gate())
            # idle, and something is waiting (or may be, in a checkpoint not loaded yet)
            if now == seen and allowed and (correlator.waiting or not correlator.restored):
                try:
                    await self.flush()
                except Exception:
                    log.exception("correlation flush failed; retried when idle again")
            seen = now

    async def flush(self) -> int:
        """Chains completed by flushing (new ones stored); returns how many were new."""
        correlator = self.detectors.correlator
        if correlator is None:
            return 0
        async with self.detectors.lock:
            await correlator.restore()
            try:
                async with self.sessions() as session, session.begin():
                    chains = correlator.flush()
                    inserted = (
                        await store_findings(session, chains, {}, cluster_id=self.cluster_id)
                        if chains
                        else []
                    )
                    await correlator.checkpoint()
            except BaseException:
                correlator.discard()
                raise
            count_committed(BatchOutcome(inserted=inserted))
            await correlator.committed(inserted)
        self.flushes += 1
        return len(inserted)
