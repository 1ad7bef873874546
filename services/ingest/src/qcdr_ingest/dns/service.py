"""Verdicts on single DNS names, and the cached domain set they are answered from.

A verdict is the answer to "should this name be blocked": listed by a domain feed (exact or by a
listed parent) means blocked, with the feeds' category as the threat. A name on no feed is put to
the DGA classifier when one is configured: the classifier lives in analysis, which ingest must not
import, so :data:`DgaScorer` is any coroutine that scores a name (in production
:class:`~qcdr_ingest.dns.dga_client.AnalysisDgaScorer`, which asks analysis over HTTP). Without a
scorer, or when it cannot answer, verdicts are feed-only and the ``reason`` says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from qcdr_ingest.dns.domains import DomainIndicators, from_stored_feeds
from qcdr_ingest.dns.names import normalize, registered_domain
from qcdr_ingest.intel.model import FeedSpec, FeedStateStore


@dataclass(frozen=True, slots=True)
class DgaScore:
    score: float  # 0..1, how machine-made the name looks
    is_dga: bool  # at or over the model's own threshold
    reasons: tuple[str, ...] = ()


class DgaUnavailableError(Exception):
    """The scorer could not answer (the message says why, for the verdict's reason)."""


DgaScorer = Callable[[str], Awaitable[DgaScore]]


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    blocked: bool
    reason: str
    threat: str | None
    registered_domain: str | None
    listed: str | None = None
    feeds: tuple[str, ...] = ()
    dga_score: float | None = None


async def verdict(raw_name: str, domains: DomainIndicators, dga: DgaScorer | None = None) -> Verdict:
    """The verdict on one name; :class:`~qcdr_ingest.dns.names.InvalidNameError` for a non-name."""
    name = normalize(raw_name)
    base = registered_domain(name)
    found = domains.match(name)
    if found is not None:
        how = "listed" if found.exact else f"under listed {found.listed}"
        feeds = ", ".join(found.feeds)
        return Verdict(
            name=name,
            blocked=True,
            reason=f"{how} by {feeds}",
            threat=",".join(found.categories) or None,
            registered_domain=base,
            listed=found.listed,
            feeds=found.feeds,
        )
    if dga is None:
        return Verdict(name, False, "not listed by any domain feed (no DGA scorer configured)", None, base)
    try:
        scored = await dga(name)
    except DgaUnavailableError as exc:
        return Verdict(
            name, False, f"not listed by any domain feed; DGA score unavailable: {exc}", None, base
        )
    if scored.is_dga:
        why = f" ({'; '.join(scored.reasons)})" if scored.reasons else ""
        reason = f"not listed; looks machine-generated: DGA score {scored.score:.2f}{why}"
        return Verdict(name, True, reason, "dga", base, dga_score=scored.score)
    return Verdict(
        name, False, f"not listed; DGA score {scored.score:.2f}", None, base, dga_score=scored.score
    )


class DomainSetCache:
    """The domain set rebuilt from the stored feed copies at most every ``max_age_s`` seconds.

    The intel scheduler (another replica, possibly) owns fetching; this only re-reads what it
    stored, so every replica converges on the same set within ``max_age_s``. Concurrent requests
    share one rebuild.
    """

    def __init__(
        self,
        specs: Sequence[FeedSpec],
        store: FeedStateStore,
        *,
        max_age_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.specs = list(specs)
        self.store = store
        self.max_age_s = max_age_s
        self.clock = clock
        self._domains: DomainIndicators | None = None
        self._built_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> DomainIndicators:
        if self._domains is not None and self.clock() - self._built_at < self.max_age_s:
            return self._domains
        async with self._lock:
            if self._domains is None or self.clock() - self._built_at >= self.max_age_s:
                self._domains = await from_stored_feeds(self.specs, self.store)
                self._built_at = self.clock()
        return self._domains
