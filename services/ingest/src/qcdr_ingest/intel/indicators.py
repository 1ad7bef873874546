"""Feeds merged into one deduplicated indicator set with provenance, TTL, blocklists and lookups.

An *indicator* is one address or network (``(start, end)`` of one family). A *listing* is one
feed listing it, with the first and last time that feed's snapshots contained it and the feed's
score for it. Times come from the caller (``seen_at`` of each snapshot) and are kept in whole
seconds.

Confidence, the one number used for ranking: the sum over the indicator's live listings of the
listing's score, where a plain feed scores 1 and an aggregate feed carries its own count (IPsum:
the number of blocklists the IP is on). So "listed by 3 of our feeds" is 3, "on 5 lists per IPsum
and in Feodo" is 6. An aggregate may include a list we also fetch directly, so this can count one
source twice; for *ordering* that bias is harmless, and it keeps the number explainable.

Decay: a listing lives until its feed has not contained it for longer than the TTL
(:meth:`IndicatorSet.expire`), so an indicator that leaves every feed is still blocked for one TTL
(feeds flap; a takedown is not instant) and then goes, instead of going at once or never.

Never-block ranges are removed *before* aggregation, so an output CIDR never covers one, and
lookups (:meth:`IndicatorSet.contains`, :meth:`IndicatorSet.feeds_for`) answer for the same
addresses the blocklist blocks: a bogon list naming ``10.0.0.0/8`` never flags a pod address.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, NamedTuple, TypeVar

import orjson
from qcdr_common.contracts.intel.v1 import BlockedCidr, FeedSummary, IntelBlocklist

from qcdr_ingest.intel.model import FeedSpec
from qcdr_ingest.intel.netsets import (
    MAPPED_V4_BASE,
    V4_BITS,
    V4_MAX,
    V6_BITS,
    CidrLabels,
    Lookup,
    NeverBlock,
    Range,
    address_count,
    covers,
    fit_within,
    format_address,
    format_cidr,
    format_range,
    label_at,
    labelled_segments,
    make_lookup,
    merge,
    ranges_to_cidrs,
    subtract,
)
from qcdr_ingest.intel.parse import ParsedFeed, parse_token

SERIAL_FORMAT = "qcdr.intel.indicators"
SERIAL_VERSION = 1
FAMILIES = ((0, 4, V4_BITS), (1, 6, V6_BITS))  # (index, version, bits)

Seen = tuple[int, int, int]  # one listing: (first_seen, last_seen, score), epoch seconds
Agg = list[int]  # one indicator across feeds: [feed bitmask, confidence, last_seen]
NetItem = tuple[int, int, int, int, int]  # (start, end, feed bitmask, confidence, last_seen)
K = TypeVar("K", int, Range)


def _ts(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("seen/now times must be timezone-aware")
    return int(when.timestamp())


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class _Feed:
    name: str
    category: str
    bit: int  # this feed's bit in every mask
    seen_at: int  # latest snapshot
    ips: tuple[dict[int, Seen], dict[int, Seen]] = field(default_factory=lambda: ({}, {}))
    nets: tuple[dict[Range, Seen], dict[Range, Seen]] = field(default_factory=lambda: ({}, {}))


@dataclass(frozen=True)
class Listing:
    feed: str
    category: str
    first_seen: datetime
    last_seen: datetime
    score: int


@dataclass(frozen=True)
class Indicator:
    value: str  # "a.b.c.d", "net/len" or "first-last"
    listings: tuple[Listing, ...]
    never_block: bool  # wholly inside never-block: listed, but never blocked or matched

    @property
    def confidence(self) -> int:
        return sum(item.score for item in self.listings)


@dataclass(frozen=True)
class FeedCounts:
    name: str
    category: str
    seen_at: datetime
    ips: int
    cidrs: int
    ipv6: int


class CidrEntry(NamedTuple):
    cidr: str
    feeds: tuple[str, ...]  # feeds listing an address inside it, sorted
    confidence: int  # highest confidence among those indicators


@dataclass
class BlockList:
    cidrs: list[CidrEntry] = field(default_factory=list)  # canonical, v4 before v6, ascending
    input_ips: int = 0
    input_cidrs: int = 0
    addresses: int = 0  # covered by ``cidrs``
    ipv6_addresses: int = 0  # of those, IPv6 (past any JSON integer for a /64 or wider)
    excluded_never_block: int = 0  # indicators wholly inside never-block ranges
    never_block_addresses: int = 0  # listed addresses left out because they are never-block
    uncapped_cidrs: int = 0  # CIDRs the whole set needs
    dropped_indicators: int = 0  # left out because ``max_cidrs`` bit
    dropped_cidrs: int = 0  # CIDRs the left-out addresses would have needed
    dropped_addresses: int = 0
    max_cidrs: int | None = None

    def summary(self) -> str:
        text = f"{self.input_ips} IPs and {self.input_cidrs} CIDRs → {len(self.cidrs)} CIDRs"
        if self.dropped_indicators:
            text += f" (limit {self.max_cidrs}: {self.dropped_indicators} indicators left out)"
        return text

    def to_contract(self, feeds: list[FeedSummary] | None = None) -> IntelBlocklist:
        return IntelBlocklist(
            cidrs=[BlockedCidr(cidr=c, feeds=f, confidence=n) for c, f, n in self.cidrs],
            feeds=feeds or [],
            input_ips=self.input_ips,
            input_cidrs=self.input_cidrs,
            excluded_never_block=self.excluded_never_block,
            dropped_indicators=self.dropped_indicators,
            dropped_cidrs=self.dropped_cidrs,
            max_cidrs=self.max_cidrs,
        )


@dataclass
class _Family:
    """One address family while a blocklist is built."""

    fam: int
    version: int
    bits: int
    nb: list[Range]
    ips: dict[int, Agg]
    singles: list[int]  # sorted single IPs outside never-block (once capped: the kept ones)
    nets: list[NetItem]  # sorted networks not wholly never-block (once capped: the kept ones)
    allowed: list[Range]  # every listed address minus never-block, canonical
    kept: list[Range]  # what goes out: ``allowed`` unless the size limit bit
    cidrs: list[tuple[int, int]]  # minimal CIDRs of ``kept``
    capped: bool = False


class IndicatorSet:
    def __init__(self, never_block: NeverBlock | None = None) -> None:
        self._never_block = never_block or NeverBlock()
        self._feeds: dict[str, _Feed] = {}
        self._lookup: Lookup | None = None
        self._names: dict[int, tuple[str, ...]] = {}

    @property
    def never_block(self) -> NeverBlock:
        """Ranges cut out of every blocklist and lookup (defaults plus configured extras)."""
        return self._never_block

    @never_block.setter
    def never_block(self, value: NeverBlock) -> None:
        self._never_block = value
        self._changed()

    # -- building ---------------------------------------------------------------------------

    def add_feed(
        self, feed: str | FeedSpec, category: str | None, parsed: ParsedFeed, seen_at: datetime
    ) -> None:
        """Merge one snapshot of a feed. Entries missing from it keep their last sighting and
        expire after the TTL; category ``None`` takes the spec's."""
        name = feed if isinstance(feed, str) else feed.name
        category = category or (None if isinstance(feed, str) else feed.category)
        if not category:
            raise ValueError(f"feed {name!r}: a category is required")
        now = _ts(seen_at)
        state = self._feeds.get(name)
        if state is None:
            used = {f.bit for f in self._feeds.values()}
            bit = next(i for i in range(len(used) + 1) if i not in used)
            state = self._feeds[name] = _Feed(name, category, bit, now)
        state.category = category
        state.seen_at = max(state.seen_at, now)
        for fam, ips, nets in ((0, parsed.ips4, parsed.nets4), (1, parsed.ips6, parsed.nets6)):
            _update(state.ips[fam], ips, now)
            _update(state.nets[fam], nets, now)
        self._changed()

    def drop_feed(self, name: str) -> None:
        """Forget a feed at once (removed from the configuration, not merely failing)."""
        if self._feeds.pop(name, None) is not None:
            self._changed()

    def expire(self, now: datetime, ttl: timedelta) -> int:
        """Drop listings not seen for longer than ``ttl``; returns how many indicators went."""
        cutoff = _ts(now) - int(ttl.total_seconds())
        before = self.indicator_count()
        for state in self._feeds.values():
            for fam in (0, 1):
                _expire(state.ips[fam], cutoff)
                _expire(state.nets[fam], cutoff)
        self._changed()
        return before - self.indicator_count()

    def _changed(self) -> None:
        self._lookup = None
        self._names = {}

    # -- reading ----------------------------------------------------------------------------

    def feed_counts(self) -> list[FeedCounts]:
        return [
            FeedCounts(
                name=f.name,
                category=f.category,
                seen_at=_dt(f.seen_at),
                ips=len(f.ips[0]) + len(f.ips[1]),
                cidrs=len(f.nets[0]) + len(f.nets[1]),
                ipv6=len(f.ips[1]) + len(f.nets[1]),
            )
            for f in self._feeds.values()
        ]

    def indicator_count(self) -> int:
        feeds = self._feeds.values()
        return sum(
            len(set[Any]().union(*(f.ips[fam] for f in feeds), *(f.nets[fam] for f in feeds)))
            for fam in (0, 1)
        )

    def _merged(self, fam: int) -> tuple[dict[int, Agg], dict[Range, Agg]]:
        ips: dict[int, Agg] = {}
        nets: dict[Range, Agg] = {}
        for state in self._feeds.values():
            _accumulate(ips, state.ips[fam], 1 << state.bit)
            _accumulate(nets, state.nets[fam], 1 << state.bit)
        return ips, nets

    def names(self, mask: int) -> tuple[str, ...]:
        """The (sorted) names of the feeds in a mask, as :meth:`matcher` returns them."""
        names = self._names.get(mask)
        if names is None:
            names = tuple(sorted(f.name for f in self._feeds.values() if mask >> f.bit & 1))
            self._names[mask] = names
        return names

    def indicators(self, ip: str | None = None) -> Iterator[Indicator]:
        """Every indicator (or those covering ``ip``) with its listings: for people and the API."""
        point: tuple[int, int] | None = None
        if ip is not None:
            tok = parse_token(ip.strip())
            if tok is None or tok[1] != tok[2]:
                raise ValueError(f"not an IP address: {ip!r}")
            point = _unmap(tok[0], tok[1])
        for fam, version, _ in FAMILIES:
            if point is not None and point[0] != version:
                continue
            found: dict[Range, list[Listing]] = {}
            for f in self._feeds.values():
                singles = ((n, n, v) for n, v in f.ips[fam].items())
                for s, e, (first, last, score) in chain(
                    singles, ((s, e, v) for (s, e), v in f.nets[fam].items())
                ):
                    if point is None or s <= point[1] <= e:
                        listing = Listing(f.name, f.category, _dt(first), _dt(last), score)
                        found.setdefault((s, e), []).append(listing)
            nb = self.never_block.ranges(version)
            for (s, e), listings in sorted(found.items()):
                yield Indicator(format_range(s, e, version), tuple(listings), not subtract([(s, e)], nb))

    # -- blocklist --------------------------------------------------------------------------

    def blocklist(self, max_cidrs: int | None = None) -> BlockList:
        """Minimal CIDRs of every listed address minus never-block. With ``max_cidrs``, indicators
        are offered best-first (confidence, then most recently seen, then v4 before v6 and lower
        address) and one is left out only if it does not fit beside those already kept."""
        result = BlockList(max_cidrs=max_cidrs)
        fams = [self._family(fam, version, bits, result) for fam, version, bits in FAMILIES]
        result.uncapped_cidrs = sum(len(f.cidrs) for f in fams)
        if max_cidrs is not None and result.uncapped_cidrs > max_cidrs:
            result.dropped_indicators = _cap(fams, max_cidrs)
        for f in fams:
            labels = CidrLabels(f.cidrs, f.bits)
            labels.add_points(f.singles, map(f.ips.__getitem__, f.singles))
            labels.add_ranges(item[:4] for item in f.nets)
            texts = [format_cidr(n, p, f.version) for n, p in f.cidrs]
            names = [self.names(m) for m in labels.masks]
            result.cidrs.extend(map(CidrEntry._make, zip(texts, names, labels.weights, strict=True)))
            result.addresses += address_count(f.kept)
            if f.version == 6:
                result.ipv6_addresses += address_count(f.kept)
            if f.capped:
                gone = subtract(f.allowed, f.kept)
                result.dropped_cidrs += len(ranges_to_cidrs(gone, f.bits))
                result.dropped_addresses += address_count(gone)
        return result

    def _family(self, fam: int, version: int, bits: int, result: BlockList) -> _Family:
        ips, nets = self._merged(fam)
        nb = list(self.never_block.ranges(version))
        singles = sorted(ips)
        # Never-block singles come from two bisects per never-block range, not a search per IP.
        inside = set(
            chain.from_iterable(singles[bisect_left(singles, s) : bisect_right(singles, e)] for s, e in nb)
        )
        kept_singles = [n for n in singles if n not in inside] if inside else singles
        items = [(s, e, a[0], a[1], a[2]) for (s, e), a in sorted(nets.items()) if subtract([(s, e)], nb)]
        listed = merge(chain(((n, n) for n in singles), nets))
        allowed = subtract(listed, nb)
        result.input_ips += len(ips)
        result.input_cidrs += len(nets)
        result.excluded_never_block += len(inside) + len(nets) - len(items)
        result.never_block_addresses += address_count(listed) - address_count(allowed)
        cidrs = ranges_to_cidrs(allowed, bits)
        return _Family(fam, version, bits, nb, ips, kept_singles, items, allowed, allowed, cidrs)

    # -- lookups ----------------------------------------------------------------------------

    def matcher(self) -> Lookup:
        """A lookup function for hot loops: address text (or an IPv4 int) → the bitmask of the
        feeds listing it, 0 when unlisted, never-block or not an address (:meth:`names` turns a
        mask into feed names). A snapshot: call again after the set changes."""
        if self._lookup is None:
            self._lookup = self._build_lookup()
        return self._lookup

    def contains(self, ip: str | int) -> bool:
        """Is ``ip`` (text, or an IPv4 int) listed and not never-block? Unparsable text is not."""
        lookup = self._lookup or self.matcher()
        return lookup(ip) != 0

    def feeds_for(self, ip: str | int) -> list[str]:
        """The feeds listing ``ip``, sorted; empty when unlisted or never-block."""
        lookup = self._lookup or self.matcher()
        mask = lookup(ip)
        if not mask:
            return []
        names = self._names.get(mask)
        return list(names if names is not None else self.names(mask))

    def _build_lookup(self) -> Lookup:
        exact_str: dict[str, int] = {}
        tables: list[tuple[dict[int, int], list[int], list[int]]] = []
        for fam, version, _ in FAMILIES:
            nb = list(self.never_block.ranges(version))
            per_feed = [
                (1 << f.bit, subtract(merge(f.nets[fam]), nb)) for f in self._feeds.values() if f.nets[fam]
            ]
            starts, masks = labelled_segments(per_feed)
            if not starts or starts[0] != 0:
                starts.insert(0, 0)  # a sentinel segment, so a bisect never lands before the first
                masks.insert(0, 0)
            exact = {
                n: agg[0] | label_at(starts, masks, n)
                for n, agg in self._merged(fam)[0].items()
                if not covers(nb, n)
            }
            exact_str.update((format_address(n, version), m) for n, m in exact.items())
            tables.append((exact, starts, masks))
        return make_lookup(exact_str, tables[0], tables[1])

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: per feed its entries as text plus, column-wise, how long before the
        feed's last snapshot each was first and last seen (mostly 0, so it stays small)."""
        feeds = []
        for f in self._feeds.values():
            entries: list[str] = []
            seen: list[Seen] = []
            for fam, version, _ in FAMILIES:
                entries.extend(format_address(n, version) for n in f.ips[fam])
                entries.extend(format_range(s, e, version) for s, e in f.nets[fam])
                seen.extend(chain(f.ips[fam].values(), f.nets[fam].values()))
            feeds.append(
                {
                    "name": f.name,
                    "category": f.category,
                    "seen_at": f.seen_at,
                    "entries": entries,
                    "first_age": [f.seen_at - v[0] for v in seen],
                    "last_age": [f.seen_at - v[1] for v in seen],
                    "score": [v[2] for v in seen],
                }
            )
        return {"format": SERIAL_FORMAT, "version": SERIAL_VERSION, "feeds": feeds}

    @classmethod
    def from_dict(cls, data: dict[str, Any], never_block: NeverBlock | None = None) -> IndicatorSet:
        if data.get("format") != SERIAL_FORMAT or data.get("version") != SERIAL_VERSION:
            raise ValueError(f"not a {SERIAL_FORMAT} v{SERIAL_VERSION} document")
        out = cls(never_block)
        for bit, item in enumerate(data["feeds"]):
            seen_at = int(item["seen_at"])
            state = out._feeds[item["name"]] = _Feed(item["name"], item["category"], bit, seen_at)
            columns = (item["entries"], item["first_age"], item["last_age"], item["score"])
            if len({len(c) for c in columns}) != 1:
                raise ValueError(f"feed {item['name']!r}: columns differ in length")
            for text, first_age, last_age, score in zip(*columns, strict=True):
                tok = parse_token(text)
                if tok is None:
                    raise ValueError(f"feed {item['name']!r}: bad entry {text!r}")
                fam = 0 if tok[0] == 4 else 1
                value = (seen_at - int(first_age), seen_at - int(last_age), int(score))
                if tok[1] == tok[2]:
                    state.ips[fam][tok[1]] = value
                else:
                    state.nets[fam][(tok[1], tok[2])] = value
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes, never_block: NeverBlock | None = None) -> IndicatorSet:
        return cls.from_dict(orjson.loads(data), never_block)


def _update(store: dict[K, Seen], incoming: dict[K, int], now: int) -> None:
    fresh: dict[tuple[int, int], Seen] = {}  # shares equal tuples: 100k+ entries, few distinct
    get = store.get
    for key, score in incoming.items():
        old = get(key)
        if old is None:
            first, last = now, now
        else:
            first, last = min(old[0], now), max(old[1], now)
            if now < old[1]:
                score = old[2]  # an older snapshot arriving late does not overwrite the score
        value = fresh.get((first, score))
        if value is None or value[1] != last:
            value = fresh[(first, score)] = (first, last, score)
        store[key] = value


def _expire(store: dict[K, Seen], cutoff: int) -> None:
    for key in [k for k, seen in store.items() if seen[1] < cutoff]:
        del store[key]


def _accumulate(out: dict[K, Agg], store: dict[K, Seen], bit: int) -> None:
    get = out.get
    for key, (_, last, score) in store.items():
        agg = get(key)
        if agg is None:
            out[key] = [bit, score, last]
        else:
            agg[0] |= bit
            agg[1] += score
            if last > agg[2]:
                agg[2] = last


def _unmap(version: int, n: int) -> tuple[int, int]:
    if version == 6 and MAPPED_V4_BASE <= n <= MAPPED_V4_BASE | V4_MAX:
        return 4, n - MAPPED_V4_BASE
    return version, n


def _cap(fams: list[_Family], max_cidrs: int) -> int:
    """Narrow each family to the best indicators that fit; returns how many did not."""
    ranked: list[tuple[int, int, int, int, int]] = []
    for f in fams:
        ranked.extend((-f.ips[n][1], -f.ips[n][2], f.fam, n, n) for n in f.singles)
        ranked.extend((-it[3], -it[4], f.fam, it[0], it[1]) for it in f.nets)
    ranked.sort()
    unions, fits = fit_within(
        [r[2:] for r in ranked], [f.nb for f in fams], [f.bits for f in fams], max_cidrs
    )
    keys: list[set[int | Range]] = [set(), set()]
    for (_, _, fam, s, e), fit in zip(ranked, fits, strict=True):
        if fit:
            keys[fam].add(s if s == e else (s, e))
    for f, union in zip(fams, unions, strict=True):
        f.singles = [n for n in f.singles if n in keys[f.fam]]
        f.nets = [it for it in f.nets if (it[0], it[1]) in keys[f.fam]]
        f.kept, f.capped = union.ranges(), True
        f.cidrs = ranges_to_cidrs(f.kept, f.bits)
    return len(ranked) - len(keys[0]) - len(keys[1])
