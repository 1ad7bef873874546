"""Detection over a micro-batch, and what makes its effects exactly-once.

:func:`process_batch` runs inside the handler's one transaction:

1. record every envelope id in ``analysis_received`` (``ON CONFLICT DO NOTHING``); an id already
   there was processed and committed before (a redelivery after a crash, a claim, a replay) and is
   skipped;
2. run the detectors over the events of the new envelopes only;
3. insert the findings (deterministic ids, ``ON CONFLICT DO NOTHING``: the same event in two
   envelopes still yields one finding);
4. enqueue an ``analysis.finding_raised`` envelope in the outbox for each finding actually
   inserted, and nothing for the others.

The handler commits, then the consumer acknowledges. A crash before the commit loses nothing (the
entries stay pending and are redelivered); a crash after it repeats nothing (step 1 skips them).

:class:`DetectorSet` is the dispatcher: it validates each detector's configuration at start and,
per batch, runs lookups in a savepoint and isolates failures per detector and then per event, so
one failing detector (or one event a detector chokes on) never costs the others their findings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.db import json_dumps
from qcdr_common.logging import get_logger
from qcdr_common.streams import Envelope, new_envelope
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_analysis import streams
from qcdr_analysis.correlation.correlator import Correlator
from qcdr_analysis.detectors import Detector, load_detectors
from qcdr_analysis.findings import repository as repo

log = get_logger(__name__)

FINDINGS_RAISED = Counter(
    "qcdr_analysis_findings_total", "Findings inserted (new), by detector.", ["detector"]
)
DETECTOR_ERRORS = Counter(
    "qcdr_analysis_detector_errors_total",
    "Detector failures isolated by the dispatcher (stage: lookup, batch, event).",
    ["detector", "stage"],
)
# the original's README metric: anomalies (behaviour profile, workload engine) and drift findings,
# counted once committed (a rolled-back or duplicate finding is not an anomaly raised)
ANOMALIES = Counter(
    "qualys_ai_anomalies_total",
    "Anomaly and drift findings inserted, by detector and category.",
    ["detector", "category"],
)
_ANOMALY_KINDS = frozenset({FindingKind.ANOMALY, FindingKind.DRIFT})
EVENTS_SKIPPED = Counter(
    "qcdr_analysis_redelivered_envelopes_total", "Envelopes skipped because they were already processed."
)


class DetectorConfigError(ValueError):
    """A detector's configuration is unusable (unknown detector, unknown key, bad rule file)."""


@dataclass(frozen=True)
class ActiveDetector:
    detector: Detector[Any]
    state: Any


class DetectorSet:
    """The detectors this process runs, each with its state (validated config, compiled rules)."""

    def __init__(self, active: Sequence[ActiveDetector]) -> None:
        self.active = tuple(active)
        # stateful detectors see one batch at a time, from detection to commit: the events and the
        # samples consumers share them, and a rollback must not discard another batch's changes
        self.lock = asyncio.Lock()
        # attack-chain correlation over each batch's events and the findings raised on them
        self.correlator: Correlator | None = None
        self.batches = 0  # committed batches (events and samples): the idle saver's clock

    @property
    def names(self) -> list[str]:
        return [a.detector.name for a in self.active]

    @classmethod
    def configure(
        cls, configs: Mapping[str, Mapping[str, Any]] | None = None, disabled: Collection[str] = ()
    ) -> DetectorSet:
        registry = load_detectors()
        configs = configs or {}
        unknown = (set(configs) | set(disabled)) - set(registry.names())
        if unknown:
            raise DetectorConfigError(
                f"unknown detector(s) {sorted(unknown)} (known: {', '.join(registry.names())})"
            )
        active = []
        for name, detector in sorted(registry.items(), key=lambda item: item[0]):  # import order varies
            if name in disabled:
                continue
            try:
                config = detector.config.model_validate(dict(configs.get(name, {})))
                state = detector.setup(config)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                )
                raise DetectorConfigError(f"detector {name!r}: {problems}") from None
            except (ValueError, OSError) as exc:
                raise DetectorConfigError(f"detector {name!r}: {exc}") from exc
            active.append(ActiveDetector(detector, state))
        return cls(active)

    async def run(self, session: AsyncSession, events: Sequence[SecurityEvent]) -> list[Finding]:
        """Findings of every detector over ``events``, first one per id (in detector order)."""
        found: dict[str, Finding] = {}
        if not events:
            return []
        for active in self.active:
            detector = active.detector
            lookup: Any = None
            if detector.lookup is not None:
                try:
                    # a failed query must not abort the batch's transaction: roll back to here
                    async with session.begin_nested():
                        lookup = await detector.lookup(session, events, active.state)
                except Exception:
                    DETECTOR_ERRORS.labels(detector=detector.name, stage="lookup").inc()
                    log.exception("detector lookup failed; skipped for this batch", detector=detector.name)
                    continue
            for finding in self._detect(active, events, lookup):
                found.setdefault(finding.id, finding)
        return list(found.values())

    async def persist(self, session: AsyncSession) -> None:
        """Stateful detectors write what this batch changed; a failure fails the batch (its
        transaction rolls back and the entries are redelivered), since a detection whose state
        change is lost would repeat after a restart."""
        for active in self.active:
            if active.detector.persist is not None:
                await active.detector.persist(session, active.state)

    @property
    def stateful(self) -> bool:
        return any(a.detector.persist is not None for a in self.active)

    def all_due(self) -> None:
        """Stateful detectors write everything they hold unsaved with the next ``persist``."""
        for active in self.active:
            if active.detector.all_due is not None:
                active.detector.all_due(active.state)

    def discard(self) -> None:
        """The batch's transaction did not commit: stateful detectors forget unsaved changes."""
        if self.correlator is not None:
            self.correlator.discard()
        for active in self.active:
            if active.detector.discard is not None:
                try:
                    active.detector.discard(active.state)
                except Exception:
                    log.exception("detector discard failed", detector=active.detector.name)

    def state_of(self, name: str) -> Any:
        """The running state of detector ``name`` (KeyError when it is not active)."""
        for active in self.active:
            if active.detector.name == name:
                return active.state
        raise KeyError(name)

    @staticmethod
    def _detect(active: ActiveDetector, events: Sequence[SecurityEvent], lookup: Any) -> list[Finding]:
        detector = active.detector
        try:
            return list(detector.detect(events, active.state, lookup))
        except Exception:
            DETECTOR_ERRORS.labels(detector=detector.name, stage="batch").inc()
            log.exception("detector failed on a batch; retrying event by event", detector=detector.name)
        findings: list[Finding] = []
        for event in events:
            try:
                findings.extend(detector.detect((event,), active.state, lookup))
            except Exception:
                DETECTOR_ERRORS.labels(detector=detector.name, stage="event").inc()
                log.exception("detector failed on an event", detector=detector.name, event_id=event.id)
        return findings


@dataclass
class BatchOutcome:
    envelopes: int = 0
    duplicates: int = 0  # envelopes already processed (redelivered)
    events: int = 0
    findings: int = 0  # produced by the detectors
    inserted: list[Finding] = field(default_factory=list)  # new findings (each also in the outbox)

    @property
    def outbox_rows(self) -> int:
        return len(self.inserted)


def finding_envelope(finding: Finding, cause: Envelope | None, cluster_id: str) -> Envelope:
    return new_envelope(
        streams.FINDING_RAISED,
        finding,
        source=streams.SERVICE,
        cluster_id=cause.cluster_id if cause is not None else cluster_id,
        occurred_at=finding.event_time,
        correlation_id=cause.correlation_id if cause is not None else None,
        causation_id=cause.id if cause is not None else None,
    )


async def process_batch(
    session: AsyncSession,
    detectors: DetectorSet,
    events: Sequence[tuple[Envelope, SecurityEvent]],
    other: Sequence[Envelope] = (),
    *,
    cluster_id: str,
) -> BatchOutcome:
    """Steps 1-4 above, flushed in ``session``; the caller commits. ``other``: envelopes recorded as
    received without detection (types analysis does not handle)."""
    outcome = BatchOutcome(envelopes=len(events) + len(other))
    new_ids = await repo.record_received(session, [env for env, _ in events] + list(other))
    outcome.duplicates = outcome.envelopes - len(new_ids)
    fresh = [(env, event) for env, event in events if env.id in new_ids]
    outcome.events = len(fresh)
    if not fresh:
        return outcome

    batch = [event for _, event in fresh]
    findings = await detectors.run(session, batch)
    await detectors.persist(session)
    if detectors.correlator is not None:
        await detectors.correlator.restore()
        chains = detectors.correlator.feed(batch, findings)
        known = {f.id for f in findings}
        findings = [*findings, *(c for c in chains if c.id not in known)]
        await detectors.correlator.checkpoint()
    outcome.findings = len(findings)
    if findings:
        # the envelope of a finding's first evidence event continues its correlation chain
        cause_of = {(event.source, event.id): env for env, event in fresh}
        outcome.inserted = await store_findings(session, findings, cause_of, cluster_id=cluster_id)
    return outcome


async def store_findings(
    session: AsyncSession,
    findings: Sequence[Finding],
    cause_of: Mapping[tuple[str, str], Envelope],
    *,
    cluster_id: str,
) -> list[Finding]:
    """Insert findings (duplicates skipped) and enqueue an envelope for each new one; the new ones."""
    records = []
    for position, finding in enumerate(findings):
        first = finding.evidence_event_ids[0] if finding.evidence_event_ids else ""
        cause = cause_of.get((finding.source, first))
        envelope = finding_envelope(finding, cause, cluster_id)
        payload = json_dumps(envelope.payload)
        records.append(
            repo.finding_record(
                finding, payload, envelope_id=envelope.id, data=envelope.to_json(), position=position
            )
        )
    inserted = await repo.insert_findings(
        session, records, stream=streams.FINDINGS, envelope_type=streams.FINDING_RAISED
    )
    return [f for f in findings if f.id in inserted]


def count_committed(outcome: BatchOutcome) -> None:
    """Metrics of a batch, once its transaction committed."""
    if outcome.duplicates:
        EVENTS_SKIPPED.inc(outcome.duplicates)
    for finding in outcome.inserted:
        FINDINGS_RAISED.labels(detector=finding.detector).inc()
        if finding.kind in _ANOMALY_KINDS:
            ANOMALIES.labels(detector=finding.detector, category=finding.category).inc()
