"""The ``federation:baselines`` handler: shared baselines into the profiles (see
:mod:`qcdr_analysis.profiles.shared`).

One batch, one transaction, under the detectors' lock (the events batches hold it from lookup to
commit, so a baseline never lands between a batch's read of a profile and its write): the
envelopes are recorded in ``analysis_received`` (a redelivered one is skipped), each new
baseline is applied, the transaction commits, and then the running worker's in-memory copy of
every profile that changed is dropped, so its next batch loads the shared one from Postgres.

A payload that is not a SharedBaseline, or whose data is not a ready profile of that digest, is
poison: the rest of the batch commits, the handler raises, and the consumer retries the batch
envelope by envelope until the bad one ends in the dead-letter stream with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from prometheus_client import Counter
from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import VERSION as FEDERATION_VERSION
from qcdr_common.contracts.federation.v1 import SharedBaseline
from qcdr_common.logging import get_logger
from qcdr_common.streams import Delivery, Envelope
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis import streams
from qcdr_analysis.detectors import behaviour
from qcdr_analysis.findings import repository as findings_repo
from qcdr_analysis.findings.handlers import PoisonEnvelopeError, split_deliveries
from qcdr_analysis.findings.service import DetectorSet
from qcdr_analysis.profiles import shared
from qcdr_analysis.profiles.profile import Limits
from qcdr_analysis.profiles.store import ProfileStore

log = get_logger(__name__)

SHARED_BASELINES = Counter(
    "qcdr_analysis_shared_baselines_total",
    "Shared baselines received from federation, by outcome (inserted, replaced, kept, duplicate).",
    ["outcome"],
)


def parse_baseline(envelope: Envelope, limits: Limits) -> SharedBaseline:
    """The envelope's SharedBaseline; ValueError says why there is none."""
    if envelope.version != FEDERATION_VERSION:
        raise ValueError(
            f"{envelope.type} version {envelope.version} is unsupported (only {FEDERATION_VERSION})"
        )
    try:
        baseline = SharedBaseline.model_validate(envelope.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[:3]
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<payload>'}: {e['msg']}" for e in first)
        raise ValueError(f"payload is not a SharedBaseline ({exc.error_count()} errors: {detail})") from None
    shared.read_baseline(baseline, limits)  # raises ValueError for data that is no usable profile
    return baseline


class BaselinesHandler:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], detectors: DetectorSet) -> None:
        self.sessions = sessions
        self.detectors = detectors
        self.store: ProfileStore | None = None
        try:
            state: behaviour.State = detectors.state_of(behaviour.NAME)
            self.store = state.store
        except KeyError:  # profiles are not scored here; the baselines are still kept
            pass
        self.limits = self.store.limits if self.store is not None else Limits()

    async def __call__(self, deliveries: list[Delivery]) -> None:
        baselines, other, poison = split_deliveries(
            deliveries, streams.BASELINE_SHARED, partial(parse_baseline, limits=self.limits)
        )
        if baselines or other:
            await self.apply(baselines, other)
        if poison:
            raise PoisonEnvelopeError(poison)

    async def apply(
        self, baselines: Sequence[tuple[Envelope, SharedBaseline]], other: Sequence[Envelope] = ()
    ) -> list[shared.Imported]:
        """Record, apply and commit; then forget the changed profiles in the worker's memory."""
        async with self.detectors.lock:
            envelopes = [envelope for envelope, _ in baselines] + list(other)
            done: list[tuple[shared.Imported, SharedBaseline]] = []
            async with self.sessions() as session, session.begin():
                new_ids = await findings_repo.record_received(session, envelopes)
                now = datetime.now(UTC)
                for envelope, baseline in baselines:
                    if envelope.id in new_ids:
                        imported = await shared.import_baseline(session, baseline, self.limits, now)
                        done.append((imported, baseline))
            # committed: the next batch loads the shared profiles instead of what memory holds
            if self.store is not None:
                for imported, _ in done:
                    if imported.changed:
                        self.store.forget(imported.profile_key)
        duplicates = len(baselines) - len(done)
        if duplicates:
            SHARED_BASELINES.labels(outcome="duplicate").inc(duplicates)
        for imported, baseline in done:
            SHARED_BASELINES.labels(outcome=imported.outcome.value).inc()
            log.info("shared baseline received", **shared.describe(imported, baseline))
        return [imported for imported, _ in done]
