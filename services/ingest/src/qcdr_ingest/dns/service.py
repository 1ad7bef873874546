"""Verdicts on single DNS names, and the cached domain set they are answered from.

A verdict is the answer to "should this name be blocked": listed by a domain feed (exact or by a
listed parent) means blocked, with the feeds' category as the threat. Anything else is allowed.

DGA: the lexical DGA classifier lives in analysis (``qcdr_analysis.dns``), which ingest must not
import (services never import each other). :data:`DgaScorer` is the hook: the lead wires a scorer
that asks analysis (or a shared model file) and passes it to :func:`verdict`; until then no scorer
is passed and verdicts are feed-only, which the ``reason`` says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qcdr_ingest.dns.domains import DomainIndicators, from_stored_feeds
from qcdr_ingest.dns.names import normalize, registered_domain
from qcdr_ingest.intel.model import FeedSpec, FeedStateStore

# name -> (probability the name is algorithmically generated, family or None); see module doc
DgaScorer = Callable[[str], tuple[float, str | None]]
DGA_BLOCK_AT = 0.9


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


def verdict(raw_name: str, domains: DomainIndicators, dga: DgaScorer | None = None) -> Verdict:
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
    if dga is not None:
        score, family = dga(name)
        if score >= DGA_BLOCK_AT:
            threat = f"dga:{family}" if family else "dga"
            return Verdict(name, True, f"DGA score {score:.2f}", threat, base, dga_score=score)
        return Verdict(name, False, f"not listed; DGA score {score:.2f}", None, base, dga_score=score)
    return Verdict(name, False, "not listed by any domain feed (no DGA scorer configured)", None, base)


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
