"""Reads ``analysis:findings`` without a consumer group into a :class:`RuntimeState`.

Every replica keeps its own copy, so no group (a group would split the entries between replicas).
Bootstrap: the stream's history with ``XRANGE`` in pages (analysis publishes no read-only view of
its findings for other services yet, and the stream keeps far more than the open window since
``MAXLEN`` is sized for it), then ``XREAD BLOCK`` from the last id read. The service is not ready
until the bootstrap is done. Entries that do not parse are counted and skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.logging import get_logger
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.names import stream_key
from redis.asyncio import Redis

from qcdr_admission.policies.pause import pause
from qcdr_admission.runtime.state import RuntimeState

log = get_logger("qcdr.admission.runtime")

FINDINGS = "analysis:findings"
FINDING_TYPES = frozenset({"analysis.finding_raised"})


class FindingsReader:
    def __init__(
        self,
        redis: Redis,
        state: RuntimeState,
        *,
        prefix: str = "qcdr",
        batch: int = 500,
        block_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.state = state
        self.key = stream_key(prefix, FINDINGS)
        self.batch = batch
        self.block_ms = block_ms
        self.last_id = "0-0"
        self.read = 0
        self.malformed = 0

    def _apply(self, entries: Any) -> None:
        for entry_id, fields in entries:
            self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            self.read += 1
            try:
                envelope = Envelope.from_fields(fields)
                if envelope.type not in FINDING_TYPES:
                    continue
                self.state.add(envelope.payload_as(Finding))
            except (ValueError, ValidationError):
                self.malformed += 1

    async def bootstrap(self) -> None:
        start = "-"
        while True:
            entries = await self.redis.xrange(self.key, min=start, max="+", count=self.batch)
            if not entries:
                break
            self._apply(entries)
            if len(entries) < self.batch:
                break
            start = f"({self.last_id}"
        self.state.expire()
        self.state.ready = True
        log.info(
            "admission_runtime_bootstrapped", entries=self.read, open=len(self.state), last_id=self.last_id
        )

    async def poll(self) -> int:
        """One blocking read; returns the entries applied."""
        answer: Any = await self.redis.xread({self.key: self.last_id}, count=self.batch, block=self.block_ms)
        applied = 0
        for _, entries in answer or ():
            self._apply(entries)
            applied += len(entries)
        self.state.expire()
        return applied

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Bootstrap (retrying until Redis answers), then follow the stream until ``stop`` is set."""
        failing = False
        while not self.state.ready:
            try:
                await self.bootstrap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning(
                        "admission_runtime_bootstrap_failed", error=f"{type(exc).__name__}: {exc}"[:300]
                    )
                failing = True
                if await pause(stop, 1.0):
                    return
        failing = False
        while stop is None or not stop.is_set():
            try:
                await self.poll()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep what we hold, retry
                if not failing:
                    log.warning("admission_runtime_read_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                failing = True
                if await pause(stop, 1.0):
                    return

    async def ready_check(self) -> None:
        if not self.state.ready:
            raise RuntimeError("findings not bootstrapped yet")
