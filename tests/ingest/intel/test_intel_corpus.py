"""Every IP/CIDR feed sample in ../shared, parsed and aggregated, against ``ipaddress``.

The samples are read where they are (``shared_path``), never copied into the project.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from qcdr_ingest.intel.indicators import IndicatorSet
from qcdr_ingest.intel.model import FeedFormat
from qcdr_ingest.intel.netsets import NeverBlock
from qcdr_ingest.intel.parse import parse_feed

from tests.ingest.intel.ipcheck import (
    Address,
    Network,
    assert_canonical_minimal,
    expected_blocklist,
    never_block_networks,
    not_blockable,
)

pytestmark = pytest.mark.shared

PARSERS = "corpora/threat-intel/intelmq-samples/intelmq/tests/bots/parsers"
FEEDS: dict[str, tuple[str, FeedFormat]] = {
    "ciarmy": ("corpora/threat-intel/firehol-blocklist-ipsets/ciarmy.ipset", FeedFormat.AUTO),
    "et-compromised": ("corpora/threat-intel/firehol-blocklist-ipsets/et_compromised.ipset", FeedFormat.AUTO),
    "feodo": ("corpora/threat-intel/firehol-blocklist-ipsets/feodo.ipset", FeedFormat.AUTO),
    "firehol-level1": (
        "corpora/threat-intel/firehol-blocklist-ipsets/firehol_level1.netset",
        FeedFormat.AUTO,
    ),
    "spamhaus-drop-netset": (
        "corpora/threat-intel/firehol-blocklist-ipsets/spamhaus_drop.netset",
        FeedFormat.AUTO,
    ),
    "tor-exits": ("corpora/threat-intel/firehol-blocklist-ipsets/tor_exits.ipset", FeedFormat.AUTO),
    "ipsum": ("corpora/threat-intel/ipsum/ipsum.txt", FeedFormat.AUTO),
    "spamhaus-drop": (f"{PARSERS}/spamhaus/drop.txt", FeedFormat.SPAMHAUS),
    "dshield": (f"{PARSERS}/dshield/block.txt", FeedFormat.DSHIELD),
    "blocklistde-imap": (f"{PARSERS}/blocklistde/imap.txt", FeedFormat.AUTO),
    "dataplane-sshclient": (f"{PARSERS}/dataplane/sshclient.txt", FeedFormat.DATAPLANE),
    "dataplane-sshpwauth": (f"{PARSERS}/dataplane/sshpwauth.txt", FeedFormat.DATAPLANE),
    "bambenek-c2": (f"{PARSERS}/bambenek/c2-ipmasterlist.txt", FeedFormat.AUTO),
    "mass-scanner": ("corpora/threat-intel/maltrail/trails/static/mass_scanner.txt", FeedFormat.AUTO),
    "mass-scanner-cidr": (
        "corpora/threat-intel/maltrail/trails/static/mass_scanner_cidr.txt",
        FeedFormat.AUTO,
    ),
}


@dataclass
class Expected:
    singles: set[Address] = field(default_factory=set)
    networks: set[Network] = field(default_factory=set)
    garbage: int = 0

    def all_networks(self) -> list[Network]:
        return [*self.networks, *(ipaddress.ip_network(a) for a in self.singles)]


def independent_parse(text: str, fmt: FeedFormat) -> Expected:
    """A deliberately plain reading of the same formats with ``ipaddress``."""
    out = Expected()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or (fmt is FeedFormat.DSHIELD and line.startswith("Start")):
            continue
        if fmt is FeedFormat.DSHIELD:
            first, last = (ipaddress.ip_address(v) for v in line.split("\t")[:2])
            out.networks.update(ipaddress.summarize_address_range(first, last))  # type: ignore[arg-type]
            continue
        if fmt is FeedFormat.DATAPLANE:
            fields = line.split("|")
            value = fields[2].strip() if len(fields) >= 5 else ""
        else:
            value = re.split(r"[\s,;#]", line)[0]
        try:
            out.singles.add(ipaddress.ip_address(value))  # the cheap common case first
            continue
        except ValueError:
            pass
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            out.garbage += 1
            continue
        if network.num_addresses == 1:
            out.singles.add(network.network_address)
        else:
            out.networks.add(network)
    return out


@pytest.mark.parametrize("name", sorted(FEEDS))
def test_parse_counts_match_ipaddress(shared_path: Path, name: str) -> None:
    path, fmt = FEEDS[name]
    data = (shared_path / path).read_bytes()
    feed = parse_feed(data, fmt)
    expected = independent_parse(data.decode(), fmt)
    assert feed.ips == len(expected.singles)
    assert feed.cidrs == len(expected.networks)
    assert feed.garbage == expected.garbage
    assert feed.ipv6 == sum(1 for x in (*expected.singles, *expected.networks) if x.version == 6)
    if expected.networks:
        collapsed = ipaddress.collapse_addresses  # per family: it refuses to mix them
        assert feed.addresses == sum(
            n.num_addresses
            for version in (4, 6)
            for n in collapsed(x for x in expected.all_networks() if x.version == version)  # type: ignore[misc]
        )
    else:
        assert feed.addresses == len(expected.singles)


def test_known_figures(shared_path: Path) -> None:
    """Figures stated by the sources themselves (file headers, SOURCES.md)."""
    ipsum = parse_feed((shared_path / FEEDS["ipsum"][0]).read_bytes())
    assert (ipsum.ips, ipsum.cidrs, ipsum.garbage, ipsum.lines) == (120_430, 0, 0, 120_437)
    assert min(ipsum.ips4.values()) == 1
    assert max(ipsum.ips4.values()) == 10
    feodo = parse_feed((shared_path / FEEDS["feodo"][0]).read_bytes())
    assert feodo.ips == 235
    level1 = parse_feed((shared_path / FEEDS["firehol-level1"][0]).read_bytes())
    assert level1.normalized_host_bits == 0  # 61.155.222.210/31 and 64.74.223.30/31 are aligned
    dataplane = parse_feed((shared_path / FEEDS["dataplane-sshclient"][0]).read_bytes())
    assert dataplane.entries == 0
    assert dataplane.garbage > 0


def _indicator_set(shared_path: Path, names: list[str]) -> tuple[IndicatorSet, Expected]:
    seen = datetime(2026, 8, 22, tzinfo=UTC)
    indicators = IndicatorSet()
    listed = Expected()
    for name in names:
        path, fmt = FEEDS[name]
        data = (shared_path / path).read_bytes()
        indicators.add_feed(name, "attacks", parse_feed(data, fmt), seen)
        expected = independent_parse(data.decode(), fmt)
        listed.singles |= expected.singles
        listed.networks |= expected.networks
    return indicators, listed


def test_blocklist_of_every_sample_but_ipsum_matches_ipaddress(shared_path: Path) -> None:
    names = [n for n in FEEDS if n != "ipsum"]
    indicators, listed = _indicator_set(shared_path, names)
    result = indicators.blocklist()
    cidrs = [c.cidr for c in result.cidrs]
    assert cidrs == expected_blocklist(listed.all_networks(), never_block_networks(NeverBlock()))
    assert_canonical_minimal(cidrs)
    assert (result.input_ips, result.input_cidrs) == (len(listed.singles), len(listed.networks))
    # firehol_level1 lists 0.0.0.0/8 and 10.0.0.0/8: whole indicators inside never-block.
    assert result.excluded_never_block >= 2
    assert result.never_block_addresses >= 2 * 2**24
    assert not indicators.contains("10.1.2.3")
    assert indicators.feeds_for("1.4.0.1") == ["firehol-level1", "spamhaus-drop", "spamhaus-drop-netset"]
    assert indicators.feeds_for("2a06:e480::1") == ["spamhaus-drop"]


@pytest.mark.slow  # the ipaddress yardstick needs seconds for 120k addresses
def test_blocklist_with_ipsum_covers_exactly_the_blockable_addresses(shared_path: Path) -> None:
    # collapse_addresses over 120k addresses takes seconds: compare address sets instead, and
    # check minimality structurally (exact + disjoint + no mergeable siblings = the minimal cover).
    indicators, listed = _indicator_set(shared_path, ["ipsum", "feodo", "tor-exits"])
    assert not listed.networks
    result = indicators.blocklist()
    cidrs = [c.cidr for c in result.cidrs]
    assert_canonical_minimal(cidrs)
    covered: set[int] = set()
    for net in map(ipaddress.ip_network, cidrs):
        covered.update(range(int(net.network_address), int(net.broadcast_address) + 1))
    expected = {int(a) for a in listed.singles if not not_blockable(a)}
    assert covered == expected
    assert result.addresses == len(expected)
    assert result.input_ips == len(listed.singles)
    assert all(indicators.contains(str(a)) for a in list(listed.singles)[::97])
