"""The profiles a worker holds in memory, what it has not saved yet, and who uses them.

* ``profiles``: an LRU-bounded map (``capacity``); a profile is evicted only when saved, and
  never while the current batch uses it. An evicted profile is reloaded from Postgres next time.
* ``dirty``: profiles that must be saved with the current batch (their baseline grew, a finding
  was raised, their state changed). ``stale``: only counts and last-seen times changed; saved
  when ``flush_interval`` has passed since they were last written (or with the next dirty save),
  so a busy profile is not re-serialized on every batch. After a crash, counts may lag by that
  interval; what the profile knows and which findings it raised never do.
* ``unconfirmed``: written in a transaction that has not (yet) been seen to commit. The next
  batch's lookup confirms them; ``discard`` (the transaction failed) drops them, with everything
  dirty and stale, from memory so they reload from Postgres and a retried batch counts nothing
  twice.
* ``workloads``: workload key -> the profile it uses (and namespace, owner, image, first/last
  event time), written to ``analysis_profile_workloads`` when new, when its profile changes, or
  when ``last_seen`` moved by ``WORKLOAD_TOUCH`` of event time.

Metrics: ``qualys_ai_containers_learning`` / ``_ready`` count *workloads* (the original counted
containers; a workload here is an owner, all its pods) by the state of their profile, as this
worker's memory has them, refreshed after a batch at most once a second.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Gauge
from qcdr_common.contracts.events.v1 import Workload
from qcdr_common.contracts.findings.v1 import Finding

from qcdr_analysis.profiles.profile import Limits, Profile

WORKLOAD_TOUCH = 300.0  # seconds of event time between two writes of a workload's last_seen
GAUGE_EVERY = 1.0  # seconds (wall clock: metrics only)
STALE_PER_BATCH = 256  # count-only profiles written with one batch, at most

CONTAINERS_LEARNING = Gauge(
    "qualys_ai_containers_learning",
    "Workloads (owners; the original counted containers) whose image profile is learning, "
    "as this worker's memory has them.",
)
CONTAINERS_READY = Gauge(
    "qualys_ai_containers_ready",
    "Workloads (owners; the original counted containers) whose image profile is ready, "
    "as this worker's memory has them.",
)


class ProfileConflictError(RuntimeError):
    """Postgres has a newer generation of a profile this worker changed (an API reset, another
    worker): the batch must roll back and be retried after the profile reloads."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted(keys)
        super().__init__(f"profiles changed concurrently: {', '.join(self.keys)}")


@dataclass(slots=True)
class WorkloadEntry:
    profile_key: str
    workload: Workload
    first: float
    last: float
    written_last: float | None = None  # event time of last_seen as last written (None: never)
    written_profile: str | None = None


class ProfileStore:
    def __init__(
        self,
        limits: Limits,
        *,
        capacity: int = 20_000,
        workload_capacity: int = 100_000,
        flush_interval: float = 30.0,
    ) -> None:
        self.limits = limits
        self.capacity = capacity
        self.workload_capacity = workload_capacity
        self.flush_interval = flush_interval
        self.profiles: OrderedDict[str, Profile] = OrderedDict()
        self.dirty: set[str] = set()
        self.stale: set[str] = set()
        self.all_due = False  # the next due() returns every stale profile, whatever the interval
        self.unconfirmed: set[str] = set()
        self.written_at: dict[str, float] = {}  # monotonic time of a profile's last write
        self.batch_keys: set[str] = set()
        self.workloads: OrderedDict[str, WorkloadEntry] = OrderedDict()
        self.workloads_dirty: set[str] = set()
        self.workloads_unconfirmed: set[str] = set()
        # events of the current batch already observed, with their findings: the dispatcher
        # retries a failed batch event by event, and an event must not be learned twice
        self.applied: dict[tuple[str, str], Sequence[Finding]] = {}
        self._gauges_at = float("-inf")

    # ------------------------------------------------------------------ batch life cycle

    def begin_batch(self, keys: set[str]) -> None:
        """A new batch: the previous one committed (or ``discard`` ran)."""
        self.unconfirmed.clear()
        self.workloads_unconfirmed.clear()
        self.applied.clear()
        self.batch_keys = keys

    def discard(self) -> None:
        """The batch's transaction did not commit: forget everything not known to be saved."""
        for key in self.dirty | self.stale | self.unconfirmed:
            self.profiles.pop(key, None)
            self.written_at.pop(key, None)
        for key in self.workloads_dirty | self.workloads_unconfirmed:
            self.workloads.pop(key, None)
        self.dirty.clear()
        self.stale.clear()
        self.unconfirmed.clear()
        self.workloads_dirty.clear()
        self.workloads_unconfirmed.clear()
        self.applied.clear()

    # ------------------------------------------------------------------ profiles

    def get(self, key: str) -> Profile | None:
        return self.profiles.get(key)

    def load(self, profile: Profile) -> None:
        """A profile as Postgres has it, replacing whatever memory had."""
        key = profile.key
        self.dirty.discard(key)
        self.stale.discard(key)
        self.profiles[key] = profile
        self.profiles.move_to_end(key)
        self.written_at[key] = time.monotonic()
        self._evict()

    def forget(self, key: str) -> None:
        self.profiles.pop(key, None)
        self.dirty.discard(key)
        self.stale.discard(key)
        self.written_at.pop(key, None)

    def create(self, key: str) -> Profile:
        return self.add(Profile(key, self.limits))

    def add(self, profile: Profile) -> Profile:
        """A profile Postgres does not have yet (generation 0), saved with this batch."""
        self.profiles[profile.key] = profile
        self.dirty.add(profile.key)
        self._evict()
        return profile

    def touch(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key in self.profiles:
                self.profiles.move_to_end(key)

    def mark(self, key: str, changed: bool) -> None:
        if changed:
            self.dirty.add(key)
        else:
            self.stale.add(key)

    def due(self, now: float) -> list[Profile]:
        """What to save with this batch: everything dirty, and stale profiles not written for
        ``flush_interval`` (sorted by key: rows are locked in the same order by every worker)."""
        keys = set(self.dirty)
        interval = self.flush_interval
        room = STALE_PER_BATCH  # spread count flushes over batches instead of one huge write
        if self.all_due:  # a clean stop: every count, now
            self.all_due = False
            keys |= self.stale
            room = 0
        for key in self.stale:
            if room and now - self.written_at.get(key, float("-inf")) >= interval:
                keys.add(key)
                room -= 1
        over = len(self.profiles) - self.capacity
        if over > 0 and self.stale:
            # Over capacity, and unsaved counts pin profiles in memory: save the least recently
            # used of them now, whatever the interval, so that they can be evicted. (Many images
            # each touched within the interval would otherwise hold memory past the cap.)
            for key in self.profiles:  # least recently used first
                if over <= 0:
                    break
                if key in self.stale:
                    keys.add(key)
                    over -= 1
        return [self.profiles[key] for key in sorted(keys) if key in self.profiles]

    def written(self, profiles: Sequence[Profile], now: float) -> None:
        for profile in profiles:
            key = profile.key
            profile.generation += 1  # the row's generation after this write (1 for an insert)
            self.dirty.discard(key)
            self.stale.discard(key)
            self.unconfirmed.add(key)
            self.written_at[key] = now

    def _evict(self) -> None:
        if len(self.profiles) <= self.capacity:
            return
        pinned = self.dirty | self.stale | self.unconfirmed | self.batch_keys
        for key in list(self.profiles):
            if len(self.profiles) <= self.capacity:
                return
            if key not in pinned:
                del self.profiles[key]
                self.written_at.pop(key, None)

    # ------------------------------------------------------------------ workloads

    def see_workload(self, workload_key: str, profile_key: str, workload: Workload, t: float) -> None:
        entry = self.workloads.get(workload_key)
        if entry is None:
            self.workloads[workload_key] = WorkloadEntry(profile_key, workload, t, t)
            self.workloads_dirty.add(workload_key)
            if len(self.workloads) > self.workload_capacity:
                self._evict_workloads()
            return
        if t > entry.last:
            entry.last = t
            if entry.profile_key != profile_key:
                entry.profile_key, entry.workload = profile_key, workload  # a rollout: new image
                self.workloads_dirty.add(workload_key)
            elif entry.written_last is None or t - entry.written_last >= WORKLOAD_TOUCH:
                self.workloads_dirty.add(workload_key)
        elif t < entry.first:
            entry.first = t
            self.workloads_dirty.add(workload_key)

    def workloads_to_write(self) -> list[tuple[str, WorkloadEntry]]:
        return [(key, self.workloads[key]) for key in sorted(self.workloads_dirty) if key in self.workloads]

    def workloads_written(self) -> None:
        for key in self.workloads_dirty:
            entry = self.workloads.get(key)
            if entry is not None:
                entry.written_last, entry.written_profile = entry.last, entry.profile_key
        self.workloads_unconfirmed |= self.workloads_dirty
        self.workloads_dirty.clear()

    def _evict_workloads(self) -> None:
        pinned = self.workloads_dirty | self.workloads_unconfirmed
        for key in list(self.workloads):
            if len(self.workloads) <= self.workload_capacity:
                return
            if key not in pinned:
                del self.workloads[key]

    # ------------------------------------------------------------------ metrics

    def counts(self) -> tuple[int, int]:
        """(learning, ready) workloads, by the state of the profile each uses (when in memory)."""
        learning = ready = 0
        profiles = self.profiles
        for entry in self.workloads.values():
            profile = profiles.get(entry.profile_key)
            if profile is None:
                continue
            if profile.ready:
                ready += 1
            else:
                learning += 1
        return learning, ready

    def update_gauges(self, now: float) -> None:
        if now - self._gauges_at < GAUGE_EVERY:
            return
        self._gauges_at = now
        learning, ready = self.counts()
        CONTAINERS_LEARNING.set(learning)
        CONTAINERS_READY.set(ready)
