"""Regenerate the CDR IOC blocklists when AbuseIPDB's answers or the feeds' listings change.

A batch of findings regenerates the blocklists only when it brings a new indicator, but which
addresses they leave out (``QCDR_IOC_REPUTATION_THRESHOLD``) depends on ingest's answers, which
arrive seconds to days later: an address first blocked because nobody had checked it yet, then
scored clean, would stay blocked until the next verdict naming any destination. Every
``ioc_refresh_s`` this loop computes the set of indicator addresses left out now; when it differs
from the set behind the current versions (or a batch made a version meanwhile, in any replica),
it regenerates the scope under the scope's lock, exactly as a batch does. Unchanged documents
make no version, so replicas refreshing the same state only repeat a read.

A blocklist that would deny nothing at all (every address cleared and no suspicious port left)
is not emptied: no valid document denies nothing, so the current version stays and the outcome
``stale`` is logged and counted, for a person to revoke the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

from prometheus_client import Counter
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle.generation import IOC_SCOPE
from qcdr_response.lifecycle.service import BatchOutcome, Lifecycle, refresh_iocs

log = get_logger(__name__)

REFRESHES = Counter(
    "qcdr_response_ioc_refreshes_total",
    "Periodic checks of the CDR IOC blocklists against AbuseIPDB's answers and the feeds, by "
    "outcome (changed, unchanged, stale, failed).",
    ["outcome"],
)


class IocRefresher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lifecycle: Lifecycle,
        interval_s: float,
        *,
        after_commit: Callable[[BatchOutcome], Awaitable[None]] | None = None,
    ) -> None:
        self.sessions = sessions
        self.lifecycle = lifecycle
        self.interval_s = interval_s
        self.after_commit = after_commit
        # what the last regeneration of this process saw; None: regenerate at the first round
        self._fingerprint: str | None = None

    async def _fingerprint_now(self, session: AsyncSession) -> str:
        addresses = await repo.ioc_addresses(session)
        cleared = await repo.reputation_unblocked(session, addresses, self.lifecycle.ioc_reputation_threshold)
        versions = await repo.family_versions(session, IOC_SCOPE.family)
        text = "\n".join(sorted(cleared)) + "\0" + "\n".join(f"{k}={v}" for k, v in sorted(versions.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    async def refresh(self) -> str:
        """One round; returns its outcome."""
        batch: BatchOutcome | None = None
        try:
            async with self.sessions.begin() as session:
                before = await self._fingerprint_now(session)
                if before == self._fingerprint:
                    outcome = "unchanged"
                else:
                    batch, result = await refresh_iocs(session, self.lifecycle)
                    outcome = "changed" if batch.changed else "unchanged"
                    generated = {f"{d.kind}/{d.namespace or ''}/{d.name}" for d in result.documents}
                    stale = sorted(set(await repo.family_versions(session, IOC_SCOPE.family)) - generated)
                    if stale:
                        outcome = "stale"
                        log.warning(
                            "an IOC blocklist would deny nothing now; its version stays until revoked",
                            policies=stale,
                        )
                    before = await self._fingerprint_now(session)
            self._fingerprint = before
            if batch is not None and batch.changed and self.after_commit is not None:
                await self.after_commit(batch)
        except Exception:  # database trouble: the next round tries again
            log.exception("IOC blocklist refresh failed")
            outcome = "failed"
        REFRESHES.labels(outcome).inc()
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every ``interval_s`` until ``stop`` is set (the first round after one interval:
        at start-up the batches are what moves the blocklists)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            if stop.is_set():
                return
            outcome = await self.refresh()
            if outcome in ("changed", "stale"):
                log.info("IOC blocklists refreshed", outcome=outcome)
