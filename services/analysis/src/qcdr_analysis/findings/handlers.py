"""The ``ingest:events`` handler: one micro-batch, one transaction (the unit of work lives here).

An envelope whose payload is not a ``SecurityEvent`` (or of a version this code does not know) is
poison: the good envelopes of the batch are processed and committed, then the handler raises, so
the consumer retries the batch one by one. The good ones are then skipped as already received and
acknowledged; the poisoned one fails every time and ends in the dead-letter stream with the error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pydantic import ValidationError
from qcdr_common.contracts.events.v1 import VERSION as EVENT_VERSION
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.logging import get_logger
from qcdr_common.streams import Delivery, Envelope
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis import streams
from qcdr_analysis.findings.service import BatchOutcome, DetectorSet, count_committed, process_batch

log = get_logger(__name__)
T = TypeVar("T")

AfterCommit = Callable[[BatchOutcome], Awaitable[None] | None]


class PoisonEnvelopeError(ValueError):
    """Envelopes that can never be processed; the message names them and says why."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"envelope {envelope_id}: {why}" for envelope_id, why in problems))


def parse_event(envelope: Envelope) -> SecurityEvent:
    """The envelope's SecurityEvent; ValueError says why there is none."""
    if envelope.version != EVENT_VERSION:
        raise ValueError(f"{envelope.type} version {envelope.version} is unsupported (only {EVENT_VERSION})")
    try:
        return SecurityEvent.model_validate(envelope.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[:3]
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<payload>'}: {e['msg']}" for e in first)
        raise ValueError(f"payload is not a SecurityEvent ({exc.error_count()} errors: {detail})") from None


def split_deliveries(
    deliveries: Sequence[Delivery], expected_type: str, parse: Callable[[Envelope], T]
) -> tuple[list[tuple[Envelope, T]], list[Envelope], list[tuple[str, str]]]:
    """(parsed envelopes of ``expected_type``, envelopes of other types, poison: (id, why)).

    Other types are not ours to interpret (a newer producer's): they are recorded as received and
    never retried. An envelope ``parse`` rejects with ValueError is poison."""
    parsed: list[tuple[Envelope, T]] = []
    other: list[Envelope] = []
    poison: list[tuple[str, str]] = []
    for delivery in deliveries:
        envelope = delivery.envelope
        if envelope.type != expected_type:
            other.append(envelope)
            continue
        try:
            parsed.append((envelope, parse(envelope)))
        except ValueError as exc:
            poison.append((envelope.id, str(exc)))
    return parsed, other, poison


async def run_batch(
    sessions: async_sessionmaker[AsyncSession],
    detectors: DetectorSet,
    work: Callable[[AsyncSession], Awaitable[BatchOutcome]],
    after_commit: AfterCommit | None,
) -> BatchOutcome:
    """One batch, one transaction, under the detectors' lock: ``work`` then commit, then metrics
    and ``after_commit``. If it does not commit, stateful detectors forget the batch (it is
    redelivered and counted then)."""
    async with detectors.lock:
        try:
            async with sessions() as session, session.begin():
                outcome = await work(session)
        except BaseException:
            detectors.discard()
            raise
        detectors.batches += 1
    count_committed(outcome)
    if detectors.correlator is not None:
        await detectors.correlator.committed(outcome.inserted)
    if outcome.duplicates:
        log.info("redelivered envelopes skipped", count=outcome.duplicates)
    if after_commit is not None:
        pending = after_commit(outcome)
        if pending is not None:
            await pending
    return outcome


class EventsHandler:
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
        self.cluster_id = cluster_id
        self.after_commit = after_commit

    async def __call__(self, deliveries: list[Delivery]) -> None:
        events, other, poison = split_deliveries(deliveries, streams.EVENT_OBSERVED, parse_event)
        if events or other:

            async def work(session: AsyncSession) -> BatchOutcome:
                return await process_batch(session, self.detectors, events, other, cluster_id=self.cluster_id)

            await run_batch(self.sessions, self.detectors, work, self.after_commit)
        if poison:
            raise PoisonEnvelopeError(poison)
