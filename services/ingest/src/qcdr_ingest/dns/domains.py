"""The domain indicator set: which feeds list a name, matched exactly or by a listed parent.

A feed listing ``minexmr.com`` means every name under it (``pool.minexmr.com``); a feed listing
``pool.minexmr.com`` says nothing about ``www.minexmr.com``. So a query matches an entry equal to
the name or to one of its parents, walking up to but never onto the public suffix
(:func:`~qcdr_ingest.dns.names.parents`). The most specific listed entry wins; every feed that
lists it is reported. A lookup is a handful of dict probes, fast enough for every query.

The set is built from parsed feeds (:class:`~qcdr_ingest.intel.parse.ParsedFeed` with format
``domains`` or ``hosts``) and from the stored last good copies the intel scheduler keeps
(:func:`from_stored_feeds`), so it needs no table of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from qcdr_ingest.dns.names import parents, registered_domain
from qcdr_ingest.intel.model import FeedFormat, FeedSpec, FeedStateStore
from qcdr_ingest.intel.parse import ParsedFeed, parse_feed

DOMAIN_FORMATS = frozenset({FeedFormat.DOMAINS, FeedFormat.HOSTS})


@dataclass(frozen=True, slots=True)
class Listing:
    feed: str
    category: str


@dataclass(frozen=True, slots=True)
class DomainMatch:
    name: str  # the canonical query name
    listed: str  # the entry that matched: the name itself or a parent
    exact: bool
    listings: tuple[Listing, ...]  # every feed listing ``listed``, by feed name

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({item.category for item in self.listings}))

    @property
    def feeds(self) -> tuple[str, ...]:
        return tuple(item.feed for item in self.listings)


@dataclass
class DomainIndicators:
    entries: dict[str, set[Listing]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, name: str, feed: str, category: str) -> None:
        """``name`` must already be canonical (feeds are normalised by the parser)."""
        self.entries.setdefault(name, set()).add(Listing(feed, category))

    def add_feed(self, spec: FeedSpec | str, category: str | None, parsed: ParsedFeed) -> int:
        """Every name of one parsed feed; the number of names added."""
        feed = spec if isinstance(spec, str) else spec.name
        cat = category if category is not None else (spec.category if isinstance(spec, FeedSpec) else "")
        for name in parsed.domains:
            self.add(name, feed, cat)
        return len(parsed.domains)

    def match(self, name: str) -> DomainMatch | None:
        """The most specific listed entry for a canonical ``name``, or None."""
        for candidate in parents(name):
            listings = self.entries.get(candidate)
            if listings:
                ordered = tuple(sorted(listings, key=lambda item: (item.feed, item.category)))
                return DomainMatch(name, candidate, candidate == name, ordered)
        return None

    def registered_domain(self, name: str) -> str | None:
        return registered_domain(name)


def build(feeds: Iterable[tuple[FeedSpec, bytes]]) -> DomainIndicators:
    """The set from feed bodies; feeds in other formats are ignored."""
    indicators = DomainIndicators()
    for spec, body in feeds:
        if spec.format in DOMAIN_FORMATS and spec.enabled:
            indicators.add_feed(spec, None, parse_feed(body, spec.format))
    return indicators


async def from_stored_feeds(specs: Iterable[FeedSpec], store: FeedStateStore) -> DomainIndicators:
    """The set from the last good copies the intel scheduler stored (feeds never fetched are
    simply absent: a verdict then says "not listed", it does not fail)."""
    bodies = []
    for spec in specs:
        if spec.format in DOMAIN_FORMATS and spec.enabled:
            stored = await store.load(spec.name)
            if stored is not None:
                bodies.append((spec, stored.body))
    return build(bodies)
