"""Integer range algebra for IP sets: merge, subtract, minimal CIDRs, never-block ranges.

An address is a plain ``int``; a range is an inclusive ``(start, end)`` pair; a *range list* is
sorted, non-overlapping and non-adjacent (what :func:`merge` returns). IPv4 and IPv6 are never
mixed in one list: every function works on one family and takes its width in bits where it matters.
Plain ints and tuples instead of ``ipaddress`` objects because aggregation over 100k+ feed lines
must take a fraction of a second (``ipaddress.collapse_addresses`` needs seconds for that).

Never-block ranges
------------------
``NEVER_BLOCK_V4``/``NEVER_BLOCK_V6`` are written out from the IANA IPv4/IPv6 special-purpose
address registries plus the multicast and "reserved" blocks, i.e. the same notion the response
side's IOC filter uses (``not is_global or is_multicast or is_reserved or is_loopback or
is_link_local or is_unspecified``). They are spelled out instead of read from ``ipaddress``'s
private tables because those tables differ between Python patch releases (CVE-2024-4032 changed
them in 3.11.10/3.12.4/3.13). Where releases disagree we take the *union*, so we are never less
safe than any of them:

* ``192.0.0.0/24`` whole (old releases: only ``/29`` and ``.170/31``; new: all but the anycast
  ``192.0.0.9`` and ``.10``, which no sane feed lists);
* ``2001::/23`` whole (new releases exempt a few anycast/AMT/ORCHIDv2 blocks), ``2002::/16``
  (6to4) and ``3fff::/20`` (documentation, RFC 9637);
* ``fec0::/10`` (deprecated site-local), which ``ipaddress`` calls global but nothing routes.

IPv6 outside ``2000::/3`` is reserved, link-local, unique-local, site-local or multicast, so all of
it is never-block; that includes ``::ffff:0:0/96``. IPv4-mapped addresses in feeds are rewritten to
IPv4 by the parser (that is what they mean on a dual-stack socket), so the v6 output never
carries them and the v4 never-block list applies to them.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_pton

Range = tuple[int, int]
Lookup = Callable[[str | int], int]
LookupTable = tuple[dict[int, int], list[int], list[int]]  # exact addresses, segment starts, labels

V4_BITS = 32
V6_BITS = 128
V4_MAX = (1 << V4_BITS) - 1
V6_MAX = (1 << V6_BITS) - 1
MAPPED_V4_BASE = 0xFFFF << 32  # ::ffff:0:0/96

_NEVER_BLOCK_V4_TABLE: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network" (RFC 791)
    "10.0.0.0/8",  # private-use (RFC 1918)
    "100.64.0.0/10",  # shared address space / CGNAT (RFC 6598)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # private-use
    "192.0.0.0/24",  # IETF protocol assignments (RFC 6890), see module docstring
    "192.0.2.0/24",  # TEST-NET-1
    "192.168.0.0/16",  # private-use
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved (RFC 1112), includes limited broadcast 255.255.255.255
)

_NEVER_BLOCK_V6_TABLE: tuple[str, ...] = (
    "::/3",  # reserved by IETF (RFC 4291): ::, ::1, ::ffff:0:0/96, 64:ff9b::/96, 100::/64 ...
    "2001::/23",  # IETF protocol assignments (RFC 2928), incl. TEREDO, benchmarking, ORCHID
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "3fff::/20",  # documentation (RFC 9637)
    "4000::/2",  # reserved by IETF, incl. 5f00::/16 (SRv6 SIDs)
    "8000::/1",  # reserved, fc00::/7 unique-local, fe80::/10 link-local, fec0::/10, ff00::/8 multicast
)


def bits_for(version: int) -> int:
    return V4_BITS if version == 4 else V6_BITS


def cidr_range(network: int, prefixlen: int, bits: int) -> Range:
    return network, network | ((1 << (bits - prefixlen)) - 1)


def _table(cidrs: Iterable[str]) -> tuple[Range, ...]:
    # Runs once at import over a handful of entries: ipaddress is fine (and an independent parser).
    out: list[Range] = []
    for text in cidrs:
        net = ipaddress.ip_network(text)
        out.append((int(net.network_address), int(net.broadcast_address)))
    return tuple(merge(out))


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sort and coalesce overlapping *and adjacent* ranges into a canonical range list."""
    items = sorted(ranges)
    if not items:
        return []
    out: list[Range] = []
    cur_s, cur_e = items[0]
    for s, e in items:
        if s <= cur_e + 1:
            if e > cur_e:
                cur_e = e
        else:
            out.append((cur_s, cur_e))
            cur_s, cur_e = s, e
    out.append((cur_s, cur_e))
    return out


def union(*lists: Iterable[Range]) -> list[Range]:
    # Timsort finds the already-sorted runs of canonical inputs, so this is close to linear.
    return merge(r for lst in lists for r in lst)


def subtract(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """``a`` minus ``b``; both canonical (or at least sorted and non-overlapping)."""
    out: list[Range] = []
    j = 0
    nb = len(b)
    for s, e in a:
        while j < nb and b[j][1] < s:
            j += 1
        cur = s
        k = j
        while k < nb and b[k][0] <= e:
            bs, be = b[k]
            if bs > cur:
                out.append((cur, bs - 1))
            if be + 1 > cur:
                cur = be + 1
            if be >= e:
                break
            k += 1
        if cur <= e:
            out.append((cur, e))
    return out


def intersect(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s = max(a[i][0], b[j][0])
        e = min(a[i][1], b[j][1])
        if s <= e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def address_count(ranges: Iterable[Range]) -> int:
    return sum(e - s + 1 for s, e in ranges)


def _largest_block(s: int, e: int, bits: int) -> int:
    """Size of the largest CIDR block that starts at ``s`` and ends at or before ``e``."""
    align = s & -s if s else 1 << bits
    fit = 1 << ((e - s + 1).bit_length() - 1)
    return align if align < fit else fit


def ranges_to_cidrs(ranges: Iterable[Range], bits: int) -> list[tuple[int, int]]:
    """Minimal ``(network, prefixlen)`` list covering exactly ``ranges``.

    Greedy largest-aligned-block is optimal for one contiguous range, and because a canonical
    list's ranges are separated by gaps no CIDR can span two of them, the whole output is minimal.
    """
    out: list[tuple[int, int]] = []
    append = out.append
    whole = 1 << bits
    for s, e in ranges:
        if s == e:  # most feed entries are single addresses
            append((s, bits))
            continue
        while s <= e:
            align = s & -s if s else whole
            fit = 1 << ((e - s + 1).bit_length() - 1)
            size = align if align < fit else fit
            append((s, bits + 1 - size.bit_length()))
            s += size
    return out


def cidr_count(s: int, e: int, bits: int) -> int:
    n = 0
    while s <= e:
        s += _largest_block(s, e, bits)
        n += 1
    return n


def format_address(n: int, version: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, n.to_bytes(4, "big"))
    # ipaddress, not inet_ntop: glibc prints some v6 addresses in mixed dotted form.
    return ipaddress.IPv6Address(n).compressed


def format_cidr(network: int, prefixlen: int, version: int) -> str:
    return f"{format_address(network, version)}/{prefixlen}"


def format_range(s: int, e: int, version: int) -> str:
    """``a.b.c.d`` for one address, ``net/len`` for a CIDR, else ``first-last``."""
    if s == e:
        return format_address(s, version)
    cidrs = ranges_to_cidrs([(s, e)], bits_for(version))
    if len(cidrs) == 1:
        return format_cidr(cidrs[0][0], cidrs[0][1], version)
    return f"{format_address(s, version)}-{format_address(e, version)}"


def covers(ranges: Sequence[Range], n: int) -> bool:
    """Is ``n`` inside one of the (sorted, disjoint) ``ranges``?"""
    i = bisect_right(ranges, (n, V6_MAX + 1)) - 1
    return i >= 0 and n <= ranges[i][1]


def labelled_segments(labelled: Iterable[tuple[int, Sequence[Range]]]) -> tuple[list[int], list[int]]:
    """Split the address line where the set of labels covering it changes.

    ``labelled`` gives one bit per label with that label's *canonical* range list. Returns
    segment starts and, per segment, the OR of the bits covering it (0 between ranges); look a
    point up with :func:`label_at`.
    """
    # Canonical lists never have a range ending right before another starts, so a bit switches
    # on or off at a point, never both: a sweep over the switch points is enough.
    events = sorted((p, b) for bit, rs in labelled for s, e in rs for p, b in ((s, bit), (e + 1, -bit)))
    starts: list[int] = []
    labels: list[int] = []
    mask = 0
    for i, (pos, bit) in enumerate(events):
        mask = mask | bit if bit > 0 else mask & ~-bit
        if i + 1 < len(events) and events[i + 1][0] == pos:
            continue
        if labels and labels[-1] == mask:
            continue
        starts.append(pos)
        labels.append(mask)
    return starts, labels


def label_at(starts: Sequence[int], labels: Sequence[int], n: int) -> int:
    i = bisect_right(starts, n) - 1
    return labels[i] if i >= 0 else 0


class CidrLabels:
    """Per CIDR of a sorted, disjoint CIDR list: the OR of the (feed) masks and the highest weight
    of the indicators overlapping it. Indicators come sorted by start, so this is one sweep."""

    def __init__(self, cidrs: Sequence[tuple[int, int]], bits: int) -> None:
        self.starts = [n for n, _ in cidrs]
        self.ends = [n | ((1 << (bits - p)) - 1) for n, p in cidrs]
        self.masks = [0] * len(cidrs)
        self.weights = [0] * len(cidrs)

    def add_points(self, points: Iterable[int], labels: Iterable[Sequence[int]]) -> None:
        """Sorted single addresses, each with its ``(mask, weight, ...)``."""
        ends, masks, weights = self.ends, self.masks, self.weights
        i, size = 0, len(ends)
        for n, label in zip(points, labels, strict=True):
            while i < size and ends[i] < n:
                i += 1
            if i < size and self.starts[i] <= n:
                masks[i] |= label[0]
                if label[1] > weights[i]:
                    weights[i] = label[1]

    def add_ranges(self, items: Iterable[tuple[int, int, int, int]]) -> None:
        """``(start, end, mask, weight)`` items sorted by start."""
        starts, ends, masks, weights = self.starts, self.ends, self.masks, self.weights
        i, size = 0, len(ends)
        for s, e, mask, weight in items:
            while i < size and ends[i] < s:
                i += 1
            j = i  # every CIDR from here that starts by ``e`` overlaps [s, e]
            while j < size and starts[j] <= e:
                masks[j] |= mask
                if weight > weights[j]:
                    weights[j] = weight
                j += 1


NEVER_BLOCK_V4: tuple[Range, ...] = _table(_NEVER_BLOCK_V4_TABLE)
NEVER_BLOCK_V6: tuple[Range, ...] = _table(_NEVER_BLOCK_V6_TABLE)


@dataclass(frozen=True)
class NeverBlock:
    """Ranges that are never put on a blocklist: special-purpose space plus configured extras."""

    v4: tuple[Range, ...] = NEVER_BLOCK_V4
    v6: tuple[Range, ...] = NEVER_BLOCK_V6

    @classmethod
    def build(cls, extra: Iterable[str] = (), *, defaults: bool = True) -> NeverBlock:
        """Defaults plus ``extra`` CIDRs/addresses (cluster and service CIDRs, allow-list).

        Host bits in an extra are ignored (``10.0.0.1/8`` means ``10.0.0.0/8``): widening an
        exclusion is the safe direction. IPv4-mapped IPv6 extras are applied to IPv4.
        """
        v4: list[Range] = list(NEVER_BLOCK_V4) if defaults else []
        v6: list[Range] = list(NEVER_BLOCK_V6) if defaults else []
        for text in extra:
            net = ipaddress.ip_network(text.strip(), strict=False)
            s, e = int(net.network_address), int(net.broadcast_address)
            if net.version == 6 and s >= MAPPED_V4_BASE and e <= MAPPED_V4_BASE | V4_MAX:
                v4.append((s - MAPPED_V4_BASE, e - MAPPED_V4_BASE))
            elif net.version == 6:
                v6.append((s, e))
            else:
                v4.append((s, e))
        return cls(tuple(merge(v4)), tuple(merge(v6)))

    def ranges(self, version: int) -> tuple[Range, ...]:
        return self.v4 if version == 4 else self.v6

    def contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        n, version = int(addr), addr.version
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            n, version = int(addr.ipv4_mapped), 4
        return covers(self.ranges(version), n)


class IncrementalUnion:
    """A canonical range list that grows one range at a time and tracks its minimal CIDR count.

    Used when a size limit bites: indicators are offered best-first and each is kept only if the
    aggregate still fits, so the cost of a candidate is the *change* in CIDR count after merging
    with its neighbours (it can be zero or negative: a sibling completes a larger block).
    """

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.counts: list[int] = []
        self.total = 0

    def _span(self, s: int, e: int) -> tuple[int, int]:
        # Ranges that overlap or touch [s, e]: their ends reach s-1, their starts are <= e+1.
        return bisect_left(self.ends, s - 1), bisect_right(self.starts, e + 1)

    def cost(self, s: int, e: int) -> int:
        i, j = self._span(s, e)
        if i == j:
            return cidr_count(s, e, self.bits)
        ms, me = min(s, self.starts[i]), max(e, self.ends[j - 1])
        return cidr_count(ms, me, self.bits) - sum(self.counts[i:j])

    def add(self, s: int, e: int) -> None:
        i, j = self._span(s, e)
        if i < j:
            s, e = min(s, self.starts[i]), max(e, self.ends[j - 1])
        n = cidr_count(s, e, self.bits)
        self.total += n - sum(self.counts[i:j])
        self.starts[i:j] = [s]
        self.ends[i:j] = [e]
        self.counts[i:j] = [n]

    def ranges(self) -> list[Range]:
        return list(zip(self.starts, self.ends, strict=True))


def fit_within(
    candidates: Sequence[tuple[int, int, int]],
    never_block: Sequence[Sequence[Range]],
    bits: Sequence[int],
    budget: int,
) -> tuple[list[IncrementalUnion], list[bool]]:
    """Offer ``(family, start, end)`` candidates, best first, to one :class:`IncrementalUnion`
    per family sharing a budget of CIDRs; a candidate is taken only if the total still fits.
    Never-block ranges are cut out of each candidate first. Returns the unions and, per
    candidate, whether it was taken."""
    unions = [IncrementalUnion(b) for b in bits]
    taken: list[bool] = []
    for fam, s, e in candidates:
        union = unions[fam]
        # The pieces of one candidate are separated by never-block gaps, which no union ever
        # covers, so their costs are independent and simply add up.
        pieces = [(s, e)] if s == e else subtract([(s, e)], never_block[fam])
        cost = sum(union.cost(a, b) for a, b in pieces)
        fits = sum(u.total for u in unions) + cost <= budget
        if fits:
            for a, b in pieces:
                union.add(a, b)
        taken.append(fits)
    return unions, taken


def make_lookup(
    exact_str: dict[str, int],
    v4: LookupTable,
    v6: LookupTable,
) -> Lookup:
    """Address text (or an IPv4 int) → label: ``exact_str``/``exact`` hold single addresses with
    their labels, the segment lists (``labelled_segments`` plus a sentinel at 0) everything else.
    IPv4-mapped IPv6 text is looked up as IPv4; unparsable text is 0."""
    # Everything the hot path touches is a local of the closure: no attribute lookups per call.
    exact4, starts4, masks4 = v4
    exact6, starts6, masks6 = v6
    from_bytes = int.from_bytes

    def lookup_v6(ip: str) -> int:
        try:
            n = from_bytes(inet_pton(AF_INET6, ip), "big")
        except OSError:
            return 0
        if MAPPED_V4_BASE <= n <= MAPPED_V4_BASE | V4_MAX:
            return lookup(n - MAPPED_V4_BASE)
        mask = exact6.get(n)
        return mask if mask is not None else masks6[bisect_right(starts6, n) - 1]

    def lookup(ip: str | int) -> int:
        if isinstance(ip, str):
            mask = exact_str.get(ip)
            if mask is not None:
                return mask
            try:
                # inet_pton takes only the canonical dotted quad, which exact_str already holds.
                n = from_bytes(inet_pton(AF_INET, ip), "big")
            except OSError:
                return lookup_v6(ip)
            return masks4[bisect_right(starts4, n) - 1]
        if not 0 <= ip <= V4_MAX:
            raise ValueError("an int is an IPv4 address (0 <= ip < 2**32); pass IPv6 as text")
        mask = exact4.get(ip)
        return mask if mask is not None else masks4[bisect_right(starts4, ip) - 1]

    return lookup
