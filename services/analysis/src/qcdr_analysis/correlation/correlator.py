"""The correlation engine inside the analysis service: fed each micro-batch's events and the
findings the detectors raised on them, checkpointed to Redis before the batch commits.

Exactly-once, across crashes at any point:

* the checkpoint (engine state + the chains the batch completed, as *pending*) is written before
  the batch's Postgres transaction commits;
* a crash before the commit: the batch is redelivered; the restored engine ignores its events
  (it has seen them) and emits the pending chains again with the next batch;
* a crash after the commit, before the pending chains are confirmed: they are emitted again,
  and the findings table rejects them (a chain's id is its natural key).

So a chain is neither lost nor stored twice. Pending chains are re-emitted with every batch until
a commit confirms them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prometheus_client import Counter, Gauge
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.logging import get_logger

from qcdr_analysis.correlation.checkpoint import RedisCheckpoint
from qcdr_analysis.correlation.engine import Engine
from qcdr_analysis.correlation.patterns import load_patterns

log = get_logger(__name__)

EVENTS_PROCESSED = Counter(
    "qualys_correlation_events_processed_total",
    "Events (and findings on them) fed to the correlation engine.",
)
CHAINS_DETECTED = Counter(
    "qualys_correlation_chains_detected_total", "Complete attack chains committed, by pattern.", ["pattern"]
)
DROPPED = Counter(
    "qcdr_correlation_items_dropped_total",
    "Items the engine did not correlate: late (older than the allowed lateness), future (event time "
    "more than 5 minutes ahead of the clock), duplicate (a redelivery).",
    ["reason"],
)
LIVE_KEYS = Gauge("qcdr_correlation_live_keys", "Join keys with a partial chain in memory.")


class Correlator:
    def __init__(self, engine: Engine, checkpoint: RedisCheckpoint | None = None) -> None:
        self.engine = engine
        self.store = checkpoint
        self.pending: dict[str, Finding] = {}
        # The pending chains handed to the batch now in its transaction: only those are confirmed
        # when a batch commits (a batch of another stream that never stored them must not).
        self._offered: set[str] = set()
        self._unsaved_pending: dict[str, bytes | None] = {}
        self._restored = checkpoint is None

    @classmethod
    def from_patterns(
        cls,
        user_dir: Path | None,
        checkpoint: RedisCheckpoint | None = None,
        *,
        source_idle_s: float | None = None,
        source_max_lag_s: float = 3600.0,
    ) -> Correlator:
        engine = Engine(
            load_patterns(user_dir), source_idle_s=source_idle_s, source_max_lag_s=source_max_lag_s
        )
        return cls(engine, checkpoint)

    def attach(self, checkpoint: RedisCheckpoint) -> None:
        """Checkpoint to Redis from now on (the state there is loaded before the first batch)."""
        self.store = checkpoint
        self._restored = False

    async def restore(self) -> None:
        """Load the last checkpoint once, before the first batch."""
        if self._restored or self.store is None:
            return
        snapshot, pending = await self.store.load()
        if snapshot is not None:
            self.engine.restore(snapshot)
        self.pending = {key: Finding.model_validate_json(raw) for key, raw in pending.items()}
        self._restored = True
        log.info("correlation state restored", partial_keys=self.engine.live_keys, pending=len(self.pending))

    def feed(self, events: Sequence[SecurityEvent], findings: Sequence[Finding]) -> list[Finding]:
        """Chains completed by this batch, plus those completed earlier and not yet confirmed."""
        stats = self.engine.stats
        before = (stats.late, stats.future, stats.duplicates)
        chains = self.engine.feed(events, findings)
        EVENTS_PROCESSED.inc(len(events))
        for reason, old, new in zip(
            ("late", "future", "duplicate"), before, (stats.late, stats.future, stats.duplicates), strict=True
        ):
            if new > old:
                DROPPED.labels(reason=reason).inc(new - old)
        for chain in chains:
            self.pending[chain.id] = chain
            self._unsaved_pending[chain.id] = chain.model_dump_json().encode()
        LIVE_KEYS.set(self.engine.live_keys)
        self._offered = set(self.pending)
        return list(self.pending.values())

    def flush(self) -> list[Finding]:
        """Process what waits for the lateness to pass (an idle stream); like :meth:`feed`."""
        for chain in self.engine.flush():
            self.pending[chain.id] = chain
            self._unsaved_pending[chain.id] = chain.model_dump_json().encode()
        self._offered = set(self.pending)
        return list(self.pending.values())

    def discard(self) -> None:
        """The batch's transaction did not commit: its chains stay pending (offered again with the
        next batch, and kept in the checkpoint for a restart)."""
        self._offered = set()

    @property
    def restored(self) -> bool:
        """The checkpoint is loaded (or there is none to load)."""
        return self._restored or self.store is None

    @property
    def waiting(self) -> bool:
        """Items wait in the engine's buffer for the watermark, or chains for a commit."""
        return bool(self.engine.buffered) or bool(self.pending)

    async def checkpoint(self) -> None:
        """Write what the batch changed (before its transaction commits)."""
        delta = self.engine.checkpoint()
        if self.store is not None:
            await self.store.save(delta, self._unsaved_pending)
        self._unsaved_pending = {}

    async def committed(self, inserted: Sequence[Finding]) -> None:
        """The batch committed: its chains are stored (or were already); count the new ones."""
        confirmed = [key for key in self.pending if key in self._offered]
        for finding in inserted:
            if finding.kind == "chain":
                CHAINS_DETECTED.labels(pattern=finding.category.removeprefix("chain.")).inc()
        for key in confirmed:
            del self.pending[key]
        self._offered = set()
        if self.store is not None:
            try:
                await self.store.confirm(confirmed)
            except Exception:  # a restart re-emits them; the findings table drops the duplicates
                log.warning("could not confirm committed chains in Redis", exc_info=True)
