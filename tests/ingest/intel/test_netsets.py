"""Range algebra against brute force (small universes) and ``ipaddress`` (real widths)."""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qcdr_ingest.intel.netsets import (
    NEVER_BLOCK_V4,
    NEVER_BLOCK_V6,
    V4_BITS,
    V6_BITS,
    IncrementalUnion,
    NeverBlock,
    Range,
    address_count,
    cidr_count,
    format_range,
    intersect,
    label_at,
    labelled_segments,
    merge,
    ranges_to_cidrs,
    subtract,
    union,
)
from qcdr_ingest.intel.parse import parse_token

from tests.ingest.intel.ipcheck import not_blockable

SMALL = 8  # an 8-bit "address family": sets of at most 256 addresses can be compared directly

small_range = st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda t: (min(t), max(t)))
small_ranges = st.lists(small_range, max_size=12)


def addresses(ranges: list[Range]) -> set[int]:
    return {n for s, e in ranges for n in range(s, e + 1)}


def assert_canonical(ranges: list[Range]) -> None:
    for s, e in ranges:
        assert s <= e
    for (_, e1), (s2, _) in itertools.pairwise(ranges):
        assert s2 > e1 + 1, "canonical lists have a gap between ranges"


@settings(max_examples=200)
@given(small_ranges, small_ranges)
def test_merge_subtract_intersect_match_set_algebra(a: list[Range], b: list[Range]) -> None:
    ma, mb = merge(a), merge(b)
    assert_canonical(ma)
    assert addresses(ma) == addresses(a)
    assert addresses(union(ma, mb)) == addresses(a) | addresses(b)
    diff = subtract(ma, mb)
    assert_canonical(diff)
    assert addresses(diff) == addresses(a) - addresses(b)
    both = intersect(ma, mb)
    assert addresses(both) == addresses(a) & addresses(b)
    # Round trip: what was taken away plus what is left is the whole.
    assert merge([*diff, *both]) == ma
    assert address_count(ma) == len(addresses(a))


def _plain_cidrs(ranges: list[Range], version: int) -> list[str]:
    """Independent: ``ipaddress`` summarises each range, then collapses the lot."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    nets = [n for s, e in ranges for n in ipaddress.summarize_address_range(cls(s), cls(e))]
    return [str(n) for n in ipaddress.collapse_addresses(nets)]


def assert_minimal_cidrs(cidrs: list[tuple[int, int]], bits: int) -> None:
    for net, plen in cidrs:
        assert net & ((1 << (bits - plen)) - 1) == 0, "no host bits"
    for (n1, p1), (n2, p2) in itertools.pairwise(cidrs):
        assert n2 >= n1 + (1 << (bits - p1)), "sorted and disjoint"
        if p1 == p2 and p1 > 0:
            parent = bits - p1 + 1
            assert not (n1 >> parent == n2 >> parent and n1 != n2), "two siblings would merge"


wide_v4 = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**20)).map(
    lambda t: (t[0], min(t[0] + t[1], 2**32 - 1))
)
wide_v6 = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 2**70)).map(
    lambda t: (t[0], min(t[0] + t[1], 2**128 - 1))
)


@settings(max_examples=200)
@given(st.lists(wide_v4, max_size=6), st.lists(wide_v6, max_size=4))
def test_ranges_to_cidrs_is_minimal_and_matches_ipaddress(v4: list[Range], v6: list[Range]) -> None:
    for ranges, version, bits in ((merge(v4), 4, V4_BITS), (merge(v6), 6, V6_BITS)):
        cidrs = ranges_to_cidrs(ranges, bits)
        assert_minimal_cidrs(cidrs, bits)
        texts = [format_range(n, n | ((1 << (bits - p)) - 1), version) for n, p in cidrs]
        assert [t if "/" in t else f"{t}/{bits}" for t in texts] == _plain_cidrs(ranges, version)
        # Decompose then re-merge is the identity on canonical lists.
        assert merge((n, n | ((1 << (bits - p)) - 1)) for n, p in cidrs) == ranges
        assert sum(cidr_count(s, e, bits) for s, e in ranges) == len(cidrs)


def test_cidr_edges() -> None:
    assert ranges_to_cidrs([(0, 2**32 - 1)], V4_BITS) == [(0, 0)]
    assert ranges_to_cidrs([(0, 2**128 - 1)], V6_BITS) == [(0, 0)]
    assert ranges_to_cidrs([(1, 6)], V4_BITS) == [(1, 32), (2, 31), (4, 31), (6, 32)]
    assert ranges_to_cidrs([], V4_BITS) == []
    assert format_range(10, 10, 4) == "0.0.0.10"
    assert format_range(0, 255, 4) == "0.0.0.0/24"
    assert format_range(1, 6, 4) == "0.0.0.1-0.0.0.6"
    assert format_range(2**128 - 1, 2**128 - 1, 6) == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


@settings(max_examples=200)
@given(st.lists(small_range, max_size=15))
def test_incremental_union_tracks_cidr_count(ranges: list[Range]) -> None:
    inc = IncrementalUnion(SMALL)
    seen: list[Range] = []
    for s, e in ranges:
        cost = inc.cost(s, e)
        before = inc.total
        inc.add(s, e)
        seen.append((s, e))
        assert inc.total == before + cost
        assert inc.ranges() == merge(seen)
        assert inc.total == len(ranges_to_cidrs(merge(seen), SMALL))


@settings(max_examples=200)
@given(st.lists(small_ranges, min_size=1, max_size=4), st.integers(0, 255))
def test_labelled_segments_match_brute_force(per_label: list[list[Range]], probe: int) -> None:
    labelled = [(1 << i, merge(rs)) for i, rs in enumerate(per_label)]
    starts, labels = labelled_segments(labelled)
    for n in {probe, 0, 255, *(s for _, rs in labelled for s, _ in rs)}:
        expected = 0
        for bit, rs in labelled:
            if any(s <= n <= e for s, e in rs):
                expected |= bit
        assert label_at(starts, labels, n) == expected


@settings(max_examples=200)
@given(st.one_of(wide_v4.map(lambda r: (4, r)), wide_v6.map(lambda r: (6, r))))
def test_format_and_parse_round_trip(item: tuple[int, Range]) -> None:
    version, (s, e) = item
    assert parse_token(format_range(s, e, version)) == (version, s, e, False)


# -- never-block ------------------------------------------------------------------------------

# Where the module is deliberately stricter than some Python release's ``ipaddress`` (it takes
# the union over releases, see netsets' docstring). Inside these, "never-block" may hold while
# the predicate does not; everywhere the two must agree exactly.
STRICTER = [
    ipaddress.ip_network(n) for n in ("192.0.0.0/24", "2001::/23", "2002::/16", "3fff::/20", "fec0::/10")
]

# Plain IANA registry entries (special-purpose, both answers of "globally reachable") and
# neighbours, so that every boundary gets probed.
EDGE_NETWORKS = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.0.8/32", "192.0.0.9/32", "192.0.0.170/31", "192.0.2.0/24",
    "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32", "8.8.8.0/24", "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96",
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2001::/32", "2001:1::1/128", "2001:2::/48",
    "2001:3::/32", "2001:4:112::/48", "2001:10::/28", "2001:20::/28", "2001:db8::/32", "2002::/16",
    "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    "2000::/3", "2a00:1450::/32", "1fff:ffff::/32", "4000::/3", "::ffff:8.8.8.0/120",
    "::ffff:10.0.0.0/104",
]  # fmt: skip


def probe_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    rnd = random.Random(20260822)
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in EDGE_NETWORKS:
        net = ipaddress.ip_network(text)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        top = 2**net.max_prefixlen - 1
        for n in (lo - 1, lo, lo + 1, (lo + hi) // 2, hi - 1, hi, hi + 1, rnd.randint(lo, hi)):
            if 0 <= n <= top:
                out.append(cls(n))
    for ranges, cls, top in (
        (NEVER_BLOCK_V4, ipaddress.IPv4Address, 2**32 - 1),
        (NEVER_BLOCK_V6, ipaddress.IPv6Address, 2**128 - 1),
    ):
        for s, e in ranges:
            out.extend(cls(n) for n in (s - 1, s, e, e + 1) if 0 <= n <= top)
    out.extend(ipaddress.IPv4Address(rnd.getrandbits(32)) for _ in range(20_000))
    out.extend(ipaddress.IPv6Address(rnd.getrandbits(128)) for _ in range(2_000))
    # Most random v6 lands outside 2000::/3 (all never-block); sample the global unicast space too.
    out.extend(ipaddress.IPv6Address((1 << 125) | rnd.getrandbits(125)) for _ in range(8_000))
    return out


def test_never_block_matches_ipaddress() -> None:
    never = NeverBlock()
    for ip in probe_addresses():
        expected = not_blockable(ip)
        got = never.contains(str(ip))
        if expected:
            assert got, f"{ip} is not blockable per ipaddress but missing from never-block"
        elif not any(ip.version == net.version and ip in net for net in STRICTER):
            assert not got, f"{ip} is blockable per ipaddress but in never-block"


def test_ipv4_mapped_follows_ipv4() -> None:
    never = NeverBlock()
    assert never.contains("::ffff:10.1.2.3")
    assert not never.contains("::ffff:8.8.8.8")  # it *is* 8.8.8.8, looked up as IPv4
    assert all(
        s > 0xFFFF_FFFF_FFFF or e < 0xFFFF << 32 for s, e in subtract([(0, 2**128 - 1)], NEVER_BLOCK_V6)
    )


def test_extra_never_block() -> None:
    never = NeverBlock.build(
        ["203.0.114.0/24", "8.8.8.8", "10.96.0.1/12", "2a00:1450::/32", "::ffff:1.1.1.0/120"]
    )
    assert never.contains("203.0.114.77")
    assert never.contains("8.8.8.8")
    assert not never.contains("8.8.8.9")
    assert never.contains("10.111.255.255")  # 10.96.0.1/12 means 10.96.0.0/12
    assert never.contains("2a00:1450::1")
    assert never.contains("1.1.1.1")  # the IPv4-mapped extra applies to IPv4
    assert not NeverBlock.build([], defaults=False).contains("10.0.0.1")
    with pytest.raises(ValueError, match="does not appear to be"):
        NeverBlock.build(["not-an-ip"])
