"""The indicator set: blocklists against ``ipaddress``, the size limit, TTL, persistence, lookups."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcdr_ingest.intel.indicators import CidrEntry, IndicatorSet
from qcdr_ingest.intel.model import FeedSpec
from qcdr_ingest.intel.netsets import NeverBlock
from qcdr_ingest.intel.parse import parse_feed

from tests.ingest.intel.ipcheck import (
    Network,
    assert_canonical_minimal,
    expected_blocklist,
    never_block_networks,
    not_blockable,
)

T0 = datetime(2026, 8, 22, 3, 0, tzinfo=UTC)
MAPPED = ipaddress.ip_network("::ffff:0:0/96")

# Bases chosen to collide, touch and straddle never-block space (private, CGNAT, documentation,
# multicast, 6to4, IPv4-mapped) as well as ordinary public space.
V4_BASES = [
    "1.2.0.0",
    "8.8.0.0",
    "10.0.0.0",
    "100.64.0.0",
    "192.0.0.0",
    "223.255.0.0",
    "224.0.0.0",
    "0.0.0.0",
]
V6_BASES = ["2a00:1450::", "2600::", "2001:db8::", "fe80::", "2002::", "::ffff:8.8.0.0", "::ffff:10.0.0.0"]


@st.composite
def networks(draw: st.DrawFn) -> Network:
    if draw(st.booleans()):
        base = int(ipaddress.IPv4Address(draw(st.sampled_from(V4_BASES))))
        return ipaddress.ip_network(
            (base + draw(st.integers(0, 2**16 - 1)), draw(st.integers(14, 32))), strict=False
        )
    base = int(ipaddress.IPv6Address(draw(st.sampled_from(V6_BASES))))
    plen = draw(st.sampled_from([20, 32, 48, 104, 112, 120, 124, 126, 127, 128, 128, 128]))
    return ipaddress.ip_network((base + draw(st.integers(0, 2**16 - 1)), plen), strict=False)


feeds_strategy = st.lists(st.lists(networks(), max_size=12), min_size=1, max_size=3)


def as_listed(net: Network) -> Network:
    """What an entry means once parsed: IPv4-mapped IPv6 is the IPv4 network it embeds."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(MAPPED):
        first = int(net.network_address) - int(MAPPED.network_address)
        return ipaddress.IPv4Network((first, net.prefixlen - 96))
    return net


def build(feeds: list[list[Network]]) -> IndicatorSet:
    indicators = IndicatorSet()
    for i, nets in enumerate(feeds):
        body = "\n".join(str(n.network_address) if n.num_addresses == 1 else str(n) for n in nets)
        indicators.add_feed(f"feed{i}", "attacks", parse_feed(body.encode()), T0)
    return indicators


NEVER = never_block_networks(NeverBlock())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds_strategy)
def test_blocklist_is_exactly_listed_minus_never_block(feeds: list[list[Network]]) -> None:
    indicators = build(feeds)
    listed = [as_listed(n) for nets in feeds for n in nets]
    result = indicators.blocklist()
    cidrs = [c.cidr for c in result.cidrs]
    assert cidrs == expected_blocklist(listed, NEVER)
    assert_canonical_minimal(cidrs)
    for entry in result.cidrs:
        net = ipaddress.ip_network(entry.cidr)
        assert not not_blockable(net.network_address)
        assert not not_blockable(net.broadcast_address)
        assert not any(net.overlaps(hole) for hole in NEVER if hole.version == net.version)
        # Every feed named on a CIDR lists something inside it, and every such feed is named.
        listing = {f"feed{i}" for i, nets in enumerate(feeds) for n in nets if as_listed(n).overlaps(net)}
        assert set(entry.feeds) == listing
        assert entry.confidence >= 1
    assert result.dropped_indicators == result.dropped_cidrs == result.dropped_addresses == 0
    assert result.uncapped_cidrs == len(cidrs)
    assert result.addresses == sum(ipaddress.ip_network(c).num_addresses for c in cidrs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds_strategy, st.data())
def test_lookups_agree_with_the_blocklist(feeds: list[list[Network]], data: st.DataObject) -> None:
    indicators = build(feeds)
    out = [ipaddress.ip_network(c.cidr) for c in indicators.blocklist().cidrs]
    probes: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for nets in feeds:
        for n in nets:
            first, last, top = int(n.network_address), int(n.broadcast_address), 2**n.max_prefixlen - 1
            cls = type(n.network_address)
            probes += [cls(a) for a in (first - 1, first, last, last + 1) if 0 <= a <= top]
    probes += [ipaddress.IPv4Address(data.draw(st.integers(0, 2**32 - 1))), ipaddress.IPv6Address(1)]
    for ip in probes:
        plain = as_listed(ipaddress.ip_network(ip)).network_address
        blocked = any(plain in n for n in out if n.version == plain.version)
        assert indicators.contains(str(ip)) is blocked
        assert indicators.contains(ip.exploded) is blocked  # non-canonical spellings too
        if plain.version == 4:
            assert indicators.contains(int(plain)) is blocked
        listing = sorted(
            {f"feed{i}" for i, nets in enumerate(feeds) for n in nets if plain in as_listed(n)}
            if blocked
            else set()
        )
        assert indicators.feeds_for(str(ip)) == listing


def feed(text: str) -> bytes:
    return "\n".join(text.split()).encode()


def test_size_limit_keeps_the_most_confident() -> None:
    indicators = IndicatorSet()
    indicators.add_feed("a", "attacks", parse_feed(feed("1.1.1.1 2.2.2.2 3.3.3.3")), T0)
    indicators.add_feed("b", "attacks", parse_feed(feed("1.1.1.1 2.2.2.2")), T0)
    indicators.add_feed("ipsum", "reputation", parse_feed(b"4.4.4.4\t5\n3.3.3.3\t1\n"), T0)
    # Confidence: 4.4.4.4 = 5; 1.1.1.1 = 2.2.2.2 = 2 (tie: lower address first); 3.3.3.3 = 1 + 1.
    result = indicators.blocklist(max_cidrs=2)
    assert result.cidrs == [CidrEntry("1.1.1.1/32", ("a", "b"), 2), CidrEntry("4.4.4.4/32", ("ipsum",), 5)]
    assert (result.dropped_indicators, result.dropped_cidrs, result.dropped_addresses) == (2, 2, 2)
    assert (result.uncapped_cidrs, result.max_cidrs) == (4, 2)
    assert result.summary() == "4 IPs and 0 CIDRs → 2 CIDRs (limit 2: 2 indicators left out)"
    assert indicators.blocklist(max_cidrs=4).dropped_indicators == 0
    assert indicators.blocklist(max_cidrs=0).cidrs == []


def test_size_limit_ties_go_to_the_most_recently_seen() -> None:
    indicators = IndicatorSet()
    indicators.add_feed("old", "attacks", parse_feed(b"1.1.1.1\n"), T0)
    indicators.add_feed("new", "attacks", parse_feed(b"9.9.9.9\n"), T0 + timedelta(hours=1))
    assert [c.cidr for c in indicators.blocklist(max_cidrs=1).cidrs] == ["9.9.9.9/32"]


def test_size_limit_counts_merges_and_never_block() -> None:
    indicators = IndicatorSet()
    indicators.add_feed("low", "attacks", parse_feed(feed("1.2.3.0 1.2.3.1 1.2.3.2")), T0)
    indicators.add_feed("mid", "attacks", parse_feed(feed("8.8.4.4 9.9.9.9 10.0.0.0/7")), T0)
    indicators.add_feed("top", "attacks", parse_feed(feed("10.0.0.0/7 9.9.9.9 8.8.4.4")), T0)
    # Confidence 2 first: 10.0.0.0/7 minus never-block 10/8 is 11.0.0.0/8, one CIDR. Then the
    # confidence-1 singles: 1.2.3.1 completes 1.2.3.0/31 for free, 1.2.3.2 no longer fits.
    result = indicators.blocklist(max_cidrs=4)
    assert [c.cidr for c in result.cidrs] == ["1.2.3.0/31", "8.8.4.4/32", "9.9.9.9/32", "11.0.0.0/8"]
    assert (result.dropped_indicators, result.dropped_cidrs, result.dropped_addresses) == (1, 1, 1)
    assert result.uncapped_cidrs == 5


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds_strategy, st.integers(0, 12))
def test_size_limit_never_exceeds_and_stays_inside(feeds: list[list[Network]], max_cidrs: int) -> None:
    indicators = build(feeds)
    full = indicators.blocklist()
    capped = indicators.blocklist(max_cidrs=max_cidrs)
    assert len(capped.cidrs) <= max_cidrs
    assert_canonical_minimal([c.cidr for c in capped.cidrs])
    allowed = [ipaddress.ip_network(c.cidr) for c in full.cidrs]
    kept = [ipaddress.ip_network(c.cidr) for c in capped.cidrs]
    assert expected_blocklist(kept, allowed) == []  # nothing outside the uncapped blocklist
    gone = expected_blocklist(allowed, kept)
    assert capped.dropped_cidrs == len(gone)
    assert capped.dropped_addresses == sum(ipaddress.ip_network(c).num_addresses for c in gone)
    if max_cidrs >= full.uncapped_cidrs:
        assert capped.cidrs == full.cidrs
        assert capped.dropped_indicators == 0
    else:
        assert capped.dropped_indicators > 0


def test_ttl_keeps_an_indicator_one_ttl_after_it_leaves_every_feed() -> None:
    ttl = timedelta(hours=2)
    indicators = IndicatorSet()
    indicators.add_feed("a", "attacks", parse_feed(feed("1.1.1.1 2.2.2.2")), T0)
    indicators.add_feed("b", "c2", parse_feed(feed("2.2.2.2")), T0)
    indicators.add_feed("a", "attacks", parse_feed(feed("1.1.1.1")), T0 + timedelta(hours=1))
    assert indicators.expire(T0 + timedelta(hours=1), ttl) == 0
    assert indicators.feeds_for("2.2.2.2") == ["a", "b"]  # left feed a an hour ago: still listed
    (only,) = indicators.indicators("2.2.2.2")
    assert only.confidence == 2
    assert {x.last_seen for x in only.listings} == {T0}
    assert indicators.expire(T0 + ttl + timedelta(seconds=1), ttl) == 1
    assert not indicators.contains("2.2.2.2")
    assert indicators.contains("1.1.1.1")
    (kept,) = indicators.indicators("1.1.1.1")
    assert (kept.listings[0].first_seen, kept.listings[0].last_seen) == (T0, T0 + timedelta(hours=1))
    assert indicators.expire(T0 + timedelta(hours=4), ttl) == 1
    assert indicators.indicator_count() == 0
    assert indicators.blocklist().cidrs == []


def test_partial_expiry_lowers_confidence() -> None:
    indicators = IndicatorSet()
    indicators.add_feed("a", "attacks", parse_feed(b"5.5.5.5\n"), T0)
    indicators.add_feed("b", "attacks", parse_feed(b"5.5.5.5\n"), T0 + timedelta(days=2))
    assert indicators.blocklist().cidrs[0].confidence == 2
    assert indicators.expire(T0 + timedelta(days=2), timedelta(days=1)) == 0
    assert indicators.blocklist().cidrs == [CidrEntry("5.5.5.5/32", ("b",), 1)]


def test_round_trip_through_json() -> None:
    indicators = IndicatorSet(NeverBlock.build(["9.9.9.0/24"]))
    indicators.add_feed("ipsum", "reputation", parse_feed(b"1.1.1.1\t3\n9.9.9.9\t2\n"), T0)
    body = b"2a00:1450::/32\n1.1.1.0-1.1.1.6\n8.8.8.8\n::ffff:7.7.7.7\n"
    indicators.add_feed("mixed", "attacks", parse_feed(body), T0 + timedelta(minutes=5))
    indicators.add_feed("mixed", "attacks", parse_feed(b"8.8.8.8\n"), T0 + timedelta(minutes=9))
    again = IndicatorSet.from_json(indicators.to_json(), NeverBlock.build(["9.9.9.0/24"]))
    assert again.blocklist() == indicators.blocklist()
    assert list(again.indicators()) == list(indicators.indicators())
    assert again.feed_counts() == indicators.feed_counts()
    assert [i.value for i in again.indicators()] == [
        "1.1.1.0-1.1.1.6", "1.1.1.1", "7.7.7.7", "8.8.8.8", "9.9.9.9", "2a00:1450::/32",
    ]  # fmt: skip
    assert [i.never_block for i in again.indicators("9.9.9.9")] == [True]
    with pytest.raises(ValueError, match=r"not a qcdr\.intel\.indicators"):
        IndicatorSet.from_dict({"format": "x"})
    broken = indicators.to_dict()
    broken["feeds"][0]["score"].pop()
    with pytest.raises(ValueError, match="columns differ"):
        IndicatorSet.from_dict(broken)


def test_lookup_edges() -> None:
    indicators = IndicatorSet()
    indicators.add_feed("bogons", "bogons", parse_feed(b"10.0.0.0/8\n192.168.1.1\n"), T0)
    indicators.add_feed(
        "drop", "hijacked", parse_feed(b"1.10.16.0/20\n2001:DB8:1::/48\n2a06:e480::/29\n"), T0
    )
    indicators.add_feed("scan", "scanner", parse_feed(b"1.10.16.7\n2a06:e480::5\n"), T0)
    assert not indicators.contains("10.1.1.1")  # listed, but never-block
    assert indicators.feeds_for("192.168.1.1") == []
    assert indicators.feeds_for("1.10.16.7") == ["drop", "scan"]
    assert indicators.feeds_for("1.10.16.8") == ["drop"]
    assert indicators.feeds_for(int(ipaddress.IPv4Address("1.10.16.7"))) == ["drop", "scan"]
    assert indicators.feeds_for("2A06:E480::5") == ["drop", "scan"]
    assert indicators.feeds_for("::ffff:1.10.16.9") == ["drop"]
    assert not indicators.contains("2001:db8:1::1")
    for junk in ("", "1.10.16", "not an ip", "1.10.16.7 ", "1.10.16.7/32"):
        assert not indicators.contains(junk)
    with pytest.raises(ValueError, match="IPv4"):
        indicators.contains(2**32)
    with pytest.raises(ValueError, match="not an IP address"):
        list(indicators.indicators("1.10.16.0/20"))
    matcher = indicators.matcher()
    assert indicators.names(matcher("1.10.16.7")) == ("drop", "scan")
    indicators.never_block = NeverBlock.build(["1.10.16.0/24"])  # e.g. an allow-list entry
    assert not indicators.contains("1.10.16.7")
    assert indicators.contains("1.10.17.1")
    assert "1.10.16.0/24" not in {c.cidr for c in indicators.blocklist().cidrs}
    indicators.add_feed("late", "c2", parse_feed(b"5.6.7.8\n"), T0)  # the index is rebuilt
    assert indicators.feeds_for("5.6.7.8") == ["late"]
    assert not matcher("5.6.7.8")


def test_add_feed_takes_a_spec_and_checks_times() -> None:
    spec = FeedSpec(
        name="feodo", url="https://feodotracker.abuse.ch/downloads/ipblocklist.txt", category="c2"
    )
    indicators = IndicatorSet()
    indicators.add_feed(spec, None, parse_feed(b"1.2.3.4\n"), T0)
    (counts,) = indicators.feed_counts()
    assert (counts.name, counts.category, counts.ips, counts.seen_at) == ("feodo", "c2", 1, T0)
    with pytest.raises(ValueError, match="category"):
        indicators.add_feed("x", None, parse_feed(b""), T0)
    with pytest.raises(ValueError, match="timezone"):
        indicators.add_feed("x", "c2", parse_feed(b""), datetime(2026, 1, 1))
    indicators.drop_feed("feodo")
    assert indicators.feed_counts() == []
    assert not indicators.contains("1.2.3.4")
