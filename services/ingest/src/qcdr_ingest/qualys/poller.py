"""The Qualys CDR poller: every interval, the findings since the watermark become stored events.

A cycle reads ``[max(watermark - overlap, now - lookback), now]`` with
:class:`~qcdr_ingest.qualys.client.QualysCdrClient` (paging, window splitting, retries),
normalizes each finding (:func:`~qcdr_ingest.qualys.normalize.normalize_finding`) and stores the
events exactly like ``POST /v1/events/qualys``: a finding's ``uuid`` is the event id, so the overlap
(for findings the API indexes late) re-reads findings without storing or announcing them twice.
The events, their outbox envelopes and the new watermark (``ingest_watermarks``, row
``qualys-cdr``) are committed in one transaction: a crash never moves the watermark past findings
that were not stored. A failed fetch leaves the watermark where it was; the next cycle retries.

It runs when the Qualys credentials (``QUALYS_USERNAME``/``QUALYS_PASSWORD`` or
``QUALYS_ACCESS_TOKEN``) are set, in one replica at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qcdr_ingest.db.locks import singleton
from qcdr_ingest.events import repository, service
from qcdr_ingest.events.metrics import ITEMS_RECEIVED, count_outcomes
from qcdr_ingest.qualys.client import QualysCdrClient
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.errors import QualysError
from qcdr_ingest.qualys.normalize import MalformedFindingError, normalize_finding
from qcdr_ingest.qualys.watermarks import get_watermark, set_watermark

log = get_logger(__name__)

WATERMARK = "qualys-cdr"
SOURCE = "qualys"
CHUNK = 5000  # events per bulk insert
MAX_WARNINGS = 10


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PollResult:
    start: datetime | None = None
    end: datetime | None = None
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    complete: bool = True
    skipped: bool = False  # another replica holds the lock
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat() if self.start else None,
            "fetched": self.fetched,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "complete": self.complete,
            "warnings": self.warnings[:MAX_WARNINGS],
        }


# A successful poll younger than this share of the interval skips the cycle (a little under one
# interval, so the replica whose turn it is does not skip its own because of timer jitter).
RECENT_SHARE = 0.9


class CdrPoller:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        qualys: QualysSettings,
        *,
        interval: timedelta,
        overlap: timedelta,
        lookback: timedelta,
        cluster_id: str,
        service_name: str = "ingest",
        notify: Callable[[], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = utc_now,
        reputation_fresh_s: float | None = None,
        max_future: timedelta = service.MAX_FUTURE,
    ) -> None:
        self._engine = engine
        self._reputation_fresh_s = reputation_fresh_s
        self._max_future = max_future  # findings stamped further ahead are malformed
        self._sessions = sessions
        self._qualys = qualys
        self.interval = interval
        self._overlap = overlap
        self._lookback = lookback
        self._cluster = cluster_id
        self._service = service_name
        self._notify = notify
        self._transport = transport
        self._clock = clock

    async def poll_once(self) -> PollResult:
        async with singleton(self._engine, f"qcdr-ingest:{WATERMARK}") as held:
            if not held:
                return PollResult(skipped=True)
            return await self._poll()

    async def _poll(self) -> PollResult:
        now = self._clock()
        async with self._sessions() as session:
            row = await get_watermark(session, WATERMARK)
        if row is not None and now - row.updated_at < self.interval * RECENT_SHARE:
            # Another replica (or this process before a restart) polled successfully within this
            # interval: the lock alone makes replicas take turns, not share the interval, and
            # Qualys' API would see every replica's schedule.
            return PollResult(skipped=True)
        start = now - self._lookback
        if row is not None:
            start = max(start, row.watermark - self._overlap)
        result = PollResult(start=start, end=now)
        try:
            async with QualysCdrClient(self._qualys, transport=self._transport) as client:
                fetched = await client.fetch_findings(start, now)
        except QualysError as exc:
            result.error = str(exc)
            log.warning("qualys poll failed; the watermark stays", error=result.error)
            return result
        result.fetched = fetched.fetched
        result.complete = fetched.complete
        result.warnings = [*fetched.warnings, *(f"truncated: {w.reason}" for w in fetched.truncated_windows)]
        result.malformed = len(fetched.unidentified)
        events = []
        for raw in fetched.findings:
            try:
                events.append(normalize_finding(raw, cluster=self._cluster))
            except MalformedFindingError as exc:
                result.malformed += 1
                if len(result.warnings) < MAX_WARNINGS:
                    result.warnings.append(f"malformed finding {raw.get('uuid')!r}: {exc.reason}")
        received_at = service.receipt_time(now)
        async with self._sessions() as session:
            for offset in range(0, len(events), CHUNK):
                chunk = events[offset : offset + CHUNK]
                prepared = service.records(
                    chunk, received_at, default_cluster=self._cluster, max_future=self._max_future
                )
                for position, reason in prepared.unstorable:
                    result.malformed += 1
                    result.warnings.append(f"finding {chunk[position].id!r}: {reason}")
                rows = prepared.rows
                result.stored += await repository.insert_events(
                    session, rows, service=self._service, reputation_fresh_s=self._reputation_fresh_s
                )
                result.duplicates += len(rows)
            result.duplicates -= result.stored
            await set_watermark(session, WATERMARK, now, self._clock(), result.details())
            await session.commit()
        if result.stored and self._notify is not None:
            self._notify()
        ITEMS_RECEIVED.labels(source=SOURCE).inc(result.fetched)
        count_outcomes(SOURCE, stored=result.stored, duplicates=result.duplicates, rejected=result.malformed)
        log.info("qualys poll done", **{k: v for k, v in result.details().items() if k != "warnings"})
        for warning in result.warnings[:MAX_WARNINGS]:
            log.warning("qualys poll warning", warning=warning)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Poll now, then every interval, until ``stop``; one failing cycle never ends the loop."""
        log.info("qualys poller started", interval_s=self.interval.total_seconds())
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # the database away, a bug: log, wait, try again
                log.error("qualys poll crashed", error=f"{type(exc).__name__}: {exc}"[:500])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())
        log.info("qualys poller stopped")
