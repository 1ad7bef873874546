"""AbuseIPDB reputation for the services: event destinations queued at storage, checked by a worker.

Once mode checks the IOC addresses of its run. In the services the addresses to check are the
public destinations workloads connect to: event storage (:func:`~qcdr_ingest.events.repository.
insert_events`) puts each new event's destination into ``intel_reputation_queue`` when it has no
fresh answer in ``intel_reputation``, and :class:`ReputationWorker` checks the queue in batches
with :class:`~qcdr_ingest.intel.abuseipdb.ReputationChecker` (cache, TTLs, daily quota and errors as
in once mode) and stores the answers in ``intel_reputation``, where analysis's ``intel_match``
detector reads them. One row per address: a busy destination costs one check per TTL, not one per
event. An address is checked within ``QCDR_REPUTATION_INTERVAL_S`` of its first event; events to
it from then on are matched (a beacon's next connection), the very first one only if its answer
was already cached.

Rows leave the queue when answered (or skipped as non-global); a failed or unasked address (an
outage, the quota) stays for the next cycle. Replicas share the queue with ``SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge
from qcdr_common.logging import get_logger
from sqlalchemy import DateTime, func, text
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.intel.abuseipdb import (
    AbuseIPDBKeyError,
    AbuseIPDBSettings,
    ReputationChecker,
    canonical_ip,
)

# Never queued (the checker would skip them anyway): private, shared, loopback, link-local,
# multicast and reserved space, so pod-to-pod traffic never fills the queue.
NON_GLOBAL = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)

# when the API said the quota ran out but not when it resets
QUOTA_PAUSE = timedelta(hours=1)

log = get_logger(__name__)

CHECKED = Counter(
    "qcdr_ingest_reputation_addresses_total",
    "Queued destinations through the AbuseIPDB worker, by result (checked, cached, skipped, failed, "
    "not_checked).",
    ["result"],
)
QUEUED = Gauge("qcdr_ingest_reputation_queue", "Destinations waiting for an AbuseIPDB check.")


def reputation_freshness(enabled: bool, abuseipdb: AbuseIPDBSettings) -> float | None:
    """Seconds an answer counts as fresh (no queueing meanwhile), or None when checks are off."""
    if not enabled or abuseipdb.api_key is None:
        return None
    return min(abuseipdb.listed_ttl, abuseipdb.clean_ttl).total_seconds()


class ReputationQueueRow(IngestBase):
    __tablename__ = "intel_reputation_queue"

    ip: Mapped[str] = mapped_column(INET, primary_key=True)
    queued_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class ReputationWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        checker: ReputationChecker,
        *,
        threshold: int = 50,
        interval_s: float = 10.0,
        batch: int = 100,
    ) -> None:
        self.sessions = sessions
        self.checker = checker
        self.threshold = threshold
        self.interval_s = interval_s
        self.batch = batch
        # the daily quota ran out: no asking until it resets (each try would be one more 429)
        self.quota_reset_at: datetime | None = None

    async def cycle(self) -> int:
        """Check one batch of the queue; returns how many rows left it."""
        async with self.sessions.begin() as session:
            rows = await session.execute(
                text(
                    "SELECT host(ip) AS ip FROM intel_reputation_queue ORDER BY queued_at, ip "
                    "LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": self.batch},
            )
            ips = [r.ip for r in rows]
            if not ips:
                QUEUED.set(0)
                return 0
            report = await self.checker.check_many(ips, self.threshold)
            answered = set(report.checked) | set(report.cached) | set(report.skipped_non_global)
            # the report speaks of canonical addresses (::ffff:192.0.2.1 is 192.0.2.1)
            done = {ip for ip in ips if ip in report.invalid or str(canonical_ip(ip)) in answered}
            if done:
                await session.execute(
                    text("DELETE FROM intel_reputation_queue WHERE host(ip) = ANY(:ips)"),
                    {"ips": sorted(done)},
                )
            QUEUED.set(int(await session.scalar(text("SELECT count(*) FROM intel_reputation_queue")) or 0))
        for result, items in (
            ("checked", report.checked),
            ("cached", report.cached),
            ("skipped", report.skipped_non_global),
            ("failed", report.failed),
            ("not_checked", report.not_checked),
        ):
            if items:
                CHECKED.labels(result).inc(len(items))
        if report.quota_exhausted:
            self.quota_reset_at = report.quota.reset_at or datetime.now(UTC) + QUOTA_PAUSE
        if report.failed or report.not_checked or report.quota_exhausted:
            log.warning("reputation check incomplete", summary=report.summary(), messages=report.messages[:3])
        return len(done)

    def _pause_s(self) -> float:
        """Seconds until the quota resets (0 when it did not run out)."""
        if self.quota_reset_at is None:
            return 0.0
        left = (self.quota_reset_at - datetime.now(UTC)).total_seconds()
        if left <= 0:
            self.quota_reset_at = None
            return 0.0
        return left

    async def run(self, stop: asyncio.Event) -> None:
        """Check the queue every ``interval_s`` (at once again while batches come back full), and
        not at all while the daily quota is spent."""
        while not stop.is_set():
            wait = self._pause_s()
            if not wait:
                wait = self.interval_s
                try:
                    if await self.cycle() >= self.batch:
                        wait = 0.0
                except AbuseIPDBKeyError as exc:
                    log.error("AbuseIPDB refused the key; reputation checks paused", error=str(exc))
                    wait = max(self.interval_s, 300.0)
                except Exception:  # database or network trouble: the queue waits for the next cycle
                    log.exception("reputation cycle failed")
                wait = self._pause_s() or wait  # this cycle may have spent the quota
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
