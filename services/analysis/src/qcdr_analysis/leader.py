"""One analysis replica consumes at a time; the others stand by.

The analysis worker keeps state in memory between batches: the correlation engine's partial chains
(checkpointed to one set of Redis keys per deployment), the per-pod DGA counts, the anomaly
engine's open windows. Two replicas sharing the ``ingest:events`` consumer group would each see
half of a workload's events, so a chain whose steps went to different replicas would never
complete, and both would write the same checkpoint. So the worker runs only while its replica
holds a Redis lease (``{prefix}:analysis:leader``); the API answers on every replica.

- A standby tries to take the lease every third of ``QCDR_LEADER_LEASE_S``; a leader that stops
  cleanly releases it, so the standby takes over within that time.
- The leader renews every third of the lease. When it learns that the lease is gone (another
  replica holds it) or has failed to renew for 90 % of the lease (Redis away), it stops its worker
  after the batch in hand and stands by again; on its next lead it starts from fresh state, read
  back from the checkpoint, as a restarted process would.
- Between renewals the consumers ask :meth:`LeaderElected.holds` before each read: a leader that
  stalled (a long pause, a suspended VM) until its lease may have passed to a standby starts no
  new batch. Only a batch already in hand when the stall began can still commit.
- What makes the hand-over safe is what makes a restart safe: effects are committed per batch with
  the envelope ids (a redelivered entry is skipped), and the new leader claims the old one's
  unacknowledged entries once they have been idle ``QCDR_STREAM_CLAIM_IDLE_MS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge
from qcdr_common.logging import get_logger
from qcdr_common.streams.lease import RedisLease
from qcdr_common.streams.runner import Worker, run_until_stopped, wait_any
from redis.exceptions import RedisError

log = get_logger(__name__)
# the share of the lease a leader counts on after a take or renewal (measured from before the
# request, so the round trip is inside it)
VALID_SHARE = 0.9

LEADING = Gauge("qcdr_analysis_leader", "1 while this replica holds the analysis lease and consumes, else 0.")
LEAD_CHANGES = Counter(
    "qcdr_analysis_leader_changes_total",
    "Lease changes of this replica: acquired, released (clean stop) or lost (taken or not renewed).",
    ["change"],
)


class LeaderElected:
    """Runs the worker ``factory`` builds while holding ``lease``; a new worker for each lead,
    built while standing by (nothing in it reads state before its first batch)."""

    def __init__(
        self,
        lease: RedisLease,
        factory: Callable[[Callable[[], bool]], list[Worker]],
        *,
        lease_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.factory = factory
        self.lease_s = lease_s
        self.interval_s = lease_s / 3
        self.clock = clock
        self.leads = 0
        self.leading = False
        # until when (this process's monotonic clock) the lease is certainly still ours: the last
        # successful take or renewal plus the lease, less a margin for the round trip
        self.valid_until = 0.0

    def holds(self) -> bool:
        """Whether the lease is certainly still this replica's: the gate of its consumers.

        Renewal runs every third of the lease, so this only closes when renewals failed or the
        process stalled (a long pause, a suspended VM) past the lease: such a leader must not
        start another batch, since a standby may have taken over meanwhile."""
        return self.clock() < self.valid_until

    def _renewed(self, at: float) -> None:
        self.valid_until = at + self.lease_s * VALID_SHARE

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while True:
                # built before the lease is taken: loading rules, patterns and models blocks the
                # loop for a while, and inside the lease it would eat into the first renewal's
                # margin (a short lease on a busy node expired before its first renewal)
                workers = self.factory(self.holds)
                if not await self._acquire(stop) or not await self._lead(stop, workers):
                    return
        finally:
            LEADING.set(0)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        """Wait for the lease; False when stopped first."""
        waiting_logged = False
        while not stop.is_set():
            try:
                asked = self.clock()
                if await self.lease.acquire():
                    self._renewed(asked)
                    return True
                if not waiting_logged:
                    log.info("standing by: another analysis replica holds the lease", lease=self.lease.key)
                    waiting_logged = True
            except RedisError as exc:
                log.warning("cannot reach Redis for the analysis lease", error=repr(exc))
            await wait_any(stop, seconds=self.interval_s)
        return False

    async def _lead(self, stop: asyncio.Event, workers: list[Worker]) -> bool:
        """Run a fresh worker until ``stop`` (False) or until the lease is lost (True)."""
        self.leads += 1
        self.leading = True
        LEADING.set(1)
        LEAD_CHANGES.labels(change="acquired").inc()
        log.info("took the analysis lease: consuming", holder=self.lease.holder)
        lost = False
        inner = asyncio.Event()

        async def keep(inner_stop: asyncio.Event) -> None:
            nonlocal lost
            while not inner_stop.is_set():
                await wait_any(stop, inner_stop, seconds=self.interval_s)
                if stop.is_set():
                    inner_stop.set()
                    return
                asked = self.clock()
                try:
                    held: bool | None = await self.lease.renew()
                except RedisError as exc:
                    log.warning("cannot renew the analysis lease", error=repr(exc))
                    held = None
                if held:
                    self._renewed(asked)
                elif held is False or not self.holds():  # taken, or unrenewed for most of the lease
                    lost = True
                    self.valid_until = 0.0  # the gate shuts now: nothing more is read or written
                    inner_stop.set()

        try:
            await run_until_stopped(*workers, keep, stop=inner, signals=False)
        finally:
            self.leading = False
            LEADING.set(0)
            self.valid_until = 0.0
        if lost:
            LEAD_CHANGES.labels(change="lost").inc()
            log.warning("lost the analysis lease: standing by, state will be read back on the next lead")
            return True
        LEAD_CHANGES.labels(change="released").inc()
        with contextlib.suppress(RedisError):
            await self.lease.release()
        log.info("released the analysis lease")
        return False
