"""The stream entry point: one transaction per micro-batch of ``analysis:findings``.

The consumer acknowledges the batch only after this returns, i.e. after the commit; what runs
after the commit (waking the outbox relay, files, auto-apply) is derived from the database and
repeated at start-up, so a crash there loses nothing either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import Delivery
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response.lifecycle.service import BatchOutcome, Lifecycle, handle_findings, parse_findings

log = get_logger(__name__)


class MalformedFindingError(ValueError):
    """A finding envelope that can never be handled (it ends in the dead-letter stream)."""


AfterCommit = Callable[[BatchOutcome], Awaitable[None]]
# Called in the batch's transaction with the findings stored for the first time (playbooks,
# output messages); returns how many rows it queued
Planner = Callable[[AsyncSession, list[Finding]], Awaitable[int]]


class FindingsHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lifecycle: Lifecycle,
        *,
        after_commit: AfterCommit | None = None,
        hooks: Sequence[Planner] = (),
    ) -> None:
        self.sessions = sessions
        self.lifecycle = lifecycle
        self.after_commit = after_commit
        self.hooks = list(hooks)

    async def __call__(self, deliveries: list[Delivery]) -> None:
        parsed, malformed = parse_findings([d.envelope for d in deliveries])
        outcome = BatchOutcome()
        if parsed:
            async with self.sessions.begin() as session:
                outcome = await handle_findings(session, parsed, self.lifecycle)
                if self.hooks and outcome.new_events:
                    new = {e.id for e in outcome.new_events}
                    fresh = [f for _, f in parsed if f is not None and f.id in new]
                    # the same finding twice in one batch is stored once: hand it on once
                    unique = list({f.id: f for f in fresh}.values())
                    for hook in self.hooks:
                        outcome.outbox_rows += await hook(session, unique)
        # only committed findings enter the cache (a rolled-back batch may come back different)
        self.lifecycle.cache.update(outcome.new_events)
        if parsed:
            log.info(
                "findings handled",
                received=outcome.received,
                duplicates=outcome.duplicates,
                new_findings=outcome.new_findings,
                links=outcome.links,
                versions=len(outcome.versions),
            )
        if self.after_commit is not None:
            try:
                await self.after_commit(outcome)
            except Exception:  # committed already: a redelivery would only be skipped
                log.exception(
                    "after-commit step failed (it runs again at the next resync, batch or start-up)"
                )
        if malformed:
            # The good ones are committed: the consumer's one-by-one retry skips them as already
            # received (cheap) and dead-letters the malformed ones after their last delivery.
            envelope, error = malformed[0]
            more = f" (and {len(malformed) - 1} more)" if len(malformed) > 1 else ""
            raise MalformedFindingError(f"envelope {envelope.id}{more}: {error}")
