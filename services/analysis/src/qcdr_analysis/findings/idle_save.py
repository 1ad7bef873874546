"""Saves what stateful detectors hold unsaved once the stream goes quiet, and at a clean stop.

Batches write a profile's new behaviour and an anomaly window's structure at once, but leave cheap
changes (a profile's counts, a window's event counts) for ``count_flush_interval`` /
``checkpoint_every`` so that a busy stream does not rewrite every row with every batch. Only a
batch wrote them, so when the stream went quiet they stayed in memory, and a clean stop or a
hand-over of the lease lost them although their events were acknowledged. This loop runs
``persist`` in a transaction of its own after ``idle_seconds`` without a batch (each detector still
decides what is due), and once more with everything due when the worker stops, while the lease
still holds: a replica that lost its lease writes nothing more (leader.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from qcdr_common.logging import get_logger
from qcdr_common.streams.runner import wait_any
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis.findings.service import DetectorSet

log = get_logger(__name__)


class IdleSaver:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        detectors: DetectorSet,
        *,
        idle_seconds: float,
        gate: Callable[[], bool] | None = None,
        consumers_done: asyncio.Event | None = None,
    ) -> None:
        self.sessions = sessions
        self.detectors = detectors
        self.idle_seconds = idle_seconds
        self.gate = gate  # the consumers' gate: the lease still certainly this replica's
        # set once the consumers have returned: the last save must come after their last batch
        self.consumers_done = consumers_done
        self.saves = 0

    def _allowed(self) -> bool:
        return self.gate is None or self.gate()

    async def run(self, stop: asyncio.Event) -> None:
        seen = self.detectors.batches
        while not stop.is_set():
            await wait_any(stop, seconds=self.idle_seconds)
            if stop.is_set():
                break
            now = self.detectors.batches
            if now == seen and self._allowed():
                await self._save_logged("saving idle detector state failed; retried when idle again")
            seen = now
        if self.consumers_done is not None:
            await self.consumers_done.wait()  # a batch read as the stop came is finished first
        if self._allowed():
            self.detectors.all_due()
            await self._save_logged("saving detector state at stop failed; unsaved counts are lost")

    async def _save_logged(self, message: str) -> None:
        try:
            await self.save()
        except Exception:
            log.exception(message)

    async def save(self) -> None:
        """One ``persist`` of every stateful detector in its own transaction, under the batches'
        lock. PostgreSQL is asked first: while it is away nothing is attempted, and the counts stay
        in memory for the next batch or save (a failed write makes the detectors forget what was
        unsaved, as after a batch, since their bookkeeping already moved on)."""
        async with self.detectors.lock:
            if not self._allowed():  # the lease may have gone while this waited for the lock
                return
            async with self.sessions() as probe:
                await probe.execute(text("SELECT 1"))  # raises while PostgreSQL is away
            try:
                async with self.sessions() as session, session.begin():
                    await self.detectors.persist(session)
            except BaseException:
                self.detectors.discard()
                raise
        self.saves += 1
