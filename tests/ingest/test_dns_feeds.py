"""Domain-list and hosts-file feed formats (on Maltrail's trails, read in place), names and the
domain indicator set: exact and parent matches, never onto a public suffix."""

from __future__ import annotations

from pathlib import Path

import pytest
from qcdr_ingest.dns.domains import DomainIndicators, build
from qcdr_ingest.dns.names import InvalidNameError, normalize, parents, registered_domain
from qcdr_ingest.dns.service import DgaScore, DgaUnavailableError, verdict
from qcdr_ingest.intel.feeds import parse_feeds
from qcdr_ingest.intel.model import FeedFormat, FeedSpec
from qcdr_ingest.intel.parse import parse_feed

TRAILS = Path("threat-intel/maltrail/trails/static")


@pytest.fixture
def maltrail(shared_path: Path) -> Path:
    return shared_path / "corpora" / TRAILS


def _data_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]


@pytest.mark.shared
def _build_from_files(specs: list[FeedSpec]) -> DomainIndicators:
    return build([(spec, Path(spec.url.removeprefix("file://")).read_bytes()) for spec in specs])


def test_dynamic_domain_trail_parses_whole(maltrail: Path) -> None:
    path = maltrail / "suspicious" / "dynamic_domain.txt"
    feed = parse_feed(path.read_bytes(), FeedFormat.DOMAINS)
    lines = _data_lines(path)
    assert feed.garbage == 0, feed.garbage_examples
    assert len(feed.domains) + feed.duplicates == len(lines)
    assert feed.ips == 0
    assert "3utilities.com" in feed.domains
    assert all(name == name.lower() and not name.endswith(".") for name in feed.domains)


@pytest.mark.shared
def test_crypto_mining_trail_splits_names_and_addresses(maltrail: Path) -> None:
    path = maltrail / "suspicious" / "crypto_mining.txt"
    feed = parse_feed(path.read_bytes(), FeedFormat.DOMAINS)
    lines = _data_lines(path)
    assert feed.garbage == 0, feed.garbage_examples
    # every line is a name or an address (IP:port, http://IP): nothing is lost
    assert len(feed.domains) + feed.ips + feed.cidrs + feed.duplicates == len(lines)
    assert {"pool.minexmr.com", "xmrpool.eu", "supportxmr.com"} <= set(feed.domains)
    assert feed.ips > 400  # the IP:port pool entries
    assert int.from_bytes(bytes([107, 191, 47, 239]), "big") in feed.ips4


@pytest.mark.shared
async def test_maltrail_feeds_in_a_feed_file_build_the_set(maltrail: Path) -> None:
    specs = parse_feeds(
        [
            {
                "name": "maltrail-mining",
                "url": "file:suspicious/crypto_mining.txt",
                "category": "mining",
                "format": "domains",
            },
            {
                "name": "maltrail-dyndns",
                "url": "file:suspicious/dynamic_domain.txt",
                "category": "dyndns",
                "format": "domains",
            },
            {"name": "maltrail-scanners", "url": "file:mass_scanner_cidr.txt", "category": "scanner"},
        ],
        base_dir=maltrail,
    )
    domains = _build_from_files(specs)
    assert len(domains) > 2000
    hit = await verdict("X.Pool.MineXMR.com.", domains)
    assert (hit.blocked, hit.threat, hit.listed, hit.registered_domain) == (
        True,
        "mining",
        "pool.minexmr.com",
        "minexmr.com",
    )
    assert hit.reason == "under listed pool.minexmr.com by maltrail-mining"
    dyn = await verdict("c2.3utilities.com", domains)
    assert (dyn.blocked, dyn.threat) == (True, "dyndns")
    clean = await verdict("www.example.org", domains)
    assert (clean.blocked, clean.threat, clean.registered_domain) == (False, None, "example.org")
    assert "no DGA scorer" in clean.reason


def test_hosts_file() -> None:
    body = b"""# hosts-style blocklist
127.0.0.1 localhost localhost.localdomain
::1 ip6-localhost ip6-loopback
0.0.0.0 0.0.0.0
0.0.0.0 ads.Example.COM tracker.example.net.  # two names on one line
0.0.0.0 b\xc3\xbccher.example
127.0.0.1\tmalware.test
not-an-address evil.example
0.0.0.0 bad_label-.example
0.0.0.0 ads.example.com
"""
    feed = parse_feed(body, FeedFormat.HOSTS)
    assert set(feed.domains) == {
        "ads.example.com",
        "tracker.example.net",
        "xn--bcher-kva.example",
        "malware.test",
    }
    assert feed.ips == 0  # the sink address is never an indicator
    assert feed.local_names == 5
    assert feed.garbage == 2
    assert feed.duplicates == 1
    assert [n for n, _ in feed.garbage_examples] == [8, 9]


def test_domain_list_edge_cases() -> None:
    body = (
        b"good.example\nGood.Example.\nhttp://198.51.100.9/path\n198.51.100.0/24\nname.example:8080\n"
        b"two words\n-bad.example\n" + b"a" * 64 + b".example\n"
    )
    feed = parse_feed(body, FeedFormat.DOMAINS)
    assert set(feed.domains) == {"good.example", "name.example"}
    assert feed.duplicates == 1
    assert feed.ips == 1
    assert feed.cidrs == 1
    assert feed.garbage == 3


def test_names() -> None:
    assert normalize(" Pool.MineXMR.COM. ") == "pool.minexmr.com"
    assert normalize("bücher.example") == "xn--bcher-kva.example"
    assert normalize("_dmarc.example.com") == "_dmarc.example.com"
    for bad in ("", ".", "a..b", "1.2.3.4", "a" * 64 + ".com", "x" * 250 + ".com", "bad name.com"):
        with pytest.raises(InvalidNameError):
            normalize(bad)
    assert registered_domain("a.b.example.co.uk") == "example.co.uk"
    assert registered_domain("localhost") is None
    # private suffixes stay registrable: a dynamic-DNS provider listed blocks every name under it
    assert registered_domain("x.duckdns.org") == "duckdns.org"
    assert parents("a.b.example.co.uk") == ["a.b.example.co.uk", "b.example.co.uk", "example.co.uk"]


def test_matching_is_exact_or_by_listed_parent_never_by_suffix() -> None:
    domains = DomainIndicators()
    domains.add("pool.bad.example.com", "f1", "mining")
    domains.add("bad.example.org", "f2", "c2")
    domains.add("bad.example.org", "f3", "phishing")
    domains.add("com", "oops", "mistake")  # a feed listing a public suffix must not block .com
    assert domains.match("pool.bad.example.com") is not None
    assert domains.match("x.pool.bad.example.com") is not None
    assert domains.match("www.bad.example.com") is None
    assert domains.match("example.com") is None
    found = domains.match("a.b.bad.example.org")
    assert found is not None
    assert (found.listed, found.exact, found.feeds, found.categories) == (
        "bad.example.org",
        False,
        ("f2", "f3"),
        ("c2", "phishing"),
    )
    assert domains.match("com") is not None  # only the exact name


async def test_dga_hook() -> None:
    domains = DomainIndicators()
    asked: list[str] = []

    async def high_scorer(name: str) -> DgaScore:
        asked.append(name)
        return DgaScore(0.97, True, ("high entropy (3.32 bits)",))

    async def low_scorer(name: str) -> DgaScore:
        return DgaScore(0.1, False)

    async def broken(name: str) -> DgaScore:
        raise DgaUnavailableError("analysis did not answer in time")

    high = await verdict("QXKZJVBWPL.example.", domains, high_scorer)
    assert asked == ["qxkzjvbwpl.example"]  # the canonical name is scored
    assert (high.blocked, high.threat, high.dga_score) == (True, "dga", 0.97)
    assert "high entropy" in high.reason
    low = await verdict("shop.example", domains, low_scorer)
    assert (low.blocked, low.threat, low.dga_score) == (False, None, 0.1)
    down = await verdict("shop.example", domains, broken)
    assert (down.blocked, down.dga_score) == (False, None)
    assert (
        down.reason == "not listed by any domain feed; DGA score unavailable: analysis did not answer in time"
    )


def test_feed_spec_accepts_the_new_formats() -> None:
    spec = FeedSpec(name="x", url="file:///x", category="c2", format=FeedFormat("hosts"))
    assert spec.format is FeedFormat.HOSTS
