"""The ``ingest:samples`` handler: resource samples into the workload anomaly engine.

Same unit of work as the events handler: record the envelopes as received, feed the new ones to
the engine, write the baselines it changed, store the findings and their outbox rows, commit; a
batch that did not commit is discarded from memory and redelivered.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from qcdr_common.contracts.samples.v1 import VERSION as SAMPLES_VERSION
from qcdr_common.contracts.samples.v1 import WorkloadSample, WorkloadSamples
from qcdr_common.logging import get_logger
from qcdr_common.streams import Delivery, Envelope
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis import streams
from qcdr_analysis.detectors import workload_anomaly
from qcdr_analysis.findings import repository as repo
from qcdr_analysis.findings.handlers import AfterCommit, PoisonEnvelopeError, run_batch, split_deliveries
from qcdr_analysis.findings.service import BatchOutcome, DetectorSet, store_findings

log = get_logger(__name__)


def parse_samples(envelope: Envelope) -> WorkloadSamples:
    if envelope.version != SAMPLES_VERSION:
        raise ValueError(
            f"{envelope.type} version {envelope.version} is unsupported (only {SAMPLES_VERSION})"
        )
    try:
        return WorkloadSamples.model_validate(envelope.payload)
    except ValidationError as exc:
        raise ValueError(f"payload is not WorkloadSamples ({exc.error_count()} errors)") from None


class SamplesHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        detectors: DetectorSet,
        *,
        cluster_id: str,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.sessions = sessions
        self.detectors = detectors
        self.state: workload_anomaly.State = detectors.state_of(workload_anomaly.NAME)
        self.cluster_id = cluster_id
        self.after_commit = after_commit

    async def __call__(self, deliveries: list[Delivery]) -> None:
        batches, other, poison = split_deliveries(deliveries, streams.SAMPLES_RECEIVED, parse_samples)
        if batches or other:

            async def work(session: AsyncSession) -> BatchOutcome:
                return await self._process(session, batches, other)

            await run_batch(self.sessions, self.detectors, work, self.after_commit)
        if poison:
            raise PoisonEnvelopeError(poison)

    async def _process(
        self,
        session: AsyncSession,
        batches: Sequence[tuple[Envelope, WorkloadSamples]],
        other: Sequence[Envelope],
    ) -> BatchOutcome:
        outcome = BatchOutcome(envelopes=len(batches) + len(other))
        new_ids = await repo.record_received(session, [env for env, _ in batches] + list(other))
        outcome.duplicates = outcome.envelopes - len(new_ids)
        fresh = [b for env, b in batches if env.id in new_ids]
        samples: list[WorkloadSample] = [s for b in fresh for s in b.samples]
        outcome.events = len(samples)
        if not samples:
            return outcome
        await workload_anomaly.refresh(session, self.state, (s.workload for s in samples))
        engine = self.state.engine
        for chunk in fresh:  # each source is an input of its own (engine.clock)
            engine.add_samples(chunk.samples, chunk.source)
        findings = engine.advance()
        await workload_anomaly.persist(session, self.state)
        outcome.findings = len(findings)
        if findings:
            outcome.inserted = await store_findings(session, findings, {}, cluster_id=self.cluster_id)
        return outcome
