"""Feed parsing: every supported line shape, and what is counted when a line is not understood."""

from __future__ import annotations

import ipaddress

import pytest
from qcdr_ingest.intel.model import FeedFormat
from qcdr_ingest.intel.parse import ParsedFeed, parse_feed


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def net(text: str) -> tuple[int, int]:
    n = ipaddress.ip_network(text)
    return int(n.network_address), int(n.broadcast_address)


def test_plain_list_with_comments_blank_crlf_and_bom() -> None:
    body = "\ufeff# header\r\n; also a comment\r\n\r\n1.2.3.4\r\n  5.6.7.8  \r\n\t\r\n9.9.9.9 # trailing\r\n"
    feed = parse_feed(body.encode())
    assert set(feed.ips4) == {ip4("1.2.3.4"), ip4("5.6.7.8"), ip4("9.9.9.9")}
    assert (feed.comments, feed.blank, feed.garbage, feed.lines) == (2, 2, 0, 7)
    assert (feed.ips, feed.cidrs, feed.ipv6, feed.addresses) == (3, 0, 0, 3)


def test_ipsum_scores_and_duplicates_keep_the_highest() -> None:
    body = b"# IP\tnumber of (black)lists\n77.90.185.20\t10\n2.57.122.53\t3\n2.57.122.53\t5\n8.8.4.4\n"
    feed = parse_feed(body)
    assert feed.ips4 == {ip4("77.90.185.20"): 10, ip4("2.57.122.53"): 5, ip4("8.8.4.4"): 1}
    assert feed.duplicates == 1
    assert parse_feed(body, FeedFormat.FIRST_COLUMN).ips4 == feed.ips4


def test_cidrs_host_bits_single_address_networks_and_ranges() -> None:
    body = b"10.0.0.1/8\n61.155.222.210/31\n1.2.3.4/32\n2001:db8::1/128\n1.1.1.0-1.1.1.255\n2.2.2.1-2.2.2.6\n"
    feed = parse_feed(body)
    assert feed.normalized_host_bits == 1  # 10.0.0.1/8 read as 10.0.0.0/8, like ipset and iprange
    assert set(feed.nets4) == {
        net("10.0.0.0/8"),
        net("61.155.222.210/31"),
        net("1.1.1.0/24"),
        (ip4("2.2.2.1"), ip4("2.2.2.6")),
    }
    assert set(feed.ips4) == {ip4("1.2.3.4")}
    assert set(feed.ips6) == {int(ipaddress.IPv6Address("2001:db8::1"))}
    assert (feed.ips, feed.cidrs, feed.ipv6) == (2, 4, 1)
    assert feed.addresses == 2**24 + 2 + 1 + 1 + 256 + 6


def test_ipv6_and_ipv4_mapped() -> None:
    feed = parse_feed(b"2A06:E480::/29 ; SBL301771\n::ffff:1.2.3.4\n::ffff:10.0.0.0/104\n2001:DB8::1\n")
    assert feed.mapped_v4 == 2
    assert set(feed.ips4) == {ip4("1.2.3.4")}
    assert set(feed.nets4) == {net("10.0.0.0/8")}
    assert set(feed.nets6) == {net("2a06:e480::/29")}
    assert feed.ipv6 == 2


def test_garbage_is_counted_with_a_few_examples() -> None:
    lines = [f"junk{i}" for i in range(8)] + ["1.2.3", "01.2.3.4", "1.2.3.4/33", "1.2.3.4:3333", "1.1.1.1"]
    feed = parse_feed("\n".join(lines).encode())
    assert feed.garbage == 12
    assert feed.garbage_examples == [(1, "junk0"), (2, "junk1"), (3, "junk2"), (4, "junk3"), (5, "junk4")]
    assert feed.ips == 1


def test_undecodable_bytes_do_not_fail_the_feed() -> None:
    feed = parse_feed(b"# caf\xe9\n1.2.3.4\n\xff\xfe\n")
    assert (feed.ips, feed.comments, feed.garbage) == (1, 1, 1)


def test_strict_formats() -> None:
    body = b"1.2.3.4\n5.6.7.0/24\n8.8.8.8 extra\n9.9.9.9 # fine\n"
    only_ips = parse_feed(body, FeedFormat.IP)
    assert (only_ips.ips, only_ips.cidrs, only_ips.garbage) == (2, 0, 2)
    cidrs = parse_feed(body, FeedFormat.CIDR)
    assert (cidrs.ips, cidrs.cidrs, cidrs.garbage) == (2, 1, 1)


def test_spamhaus_text_and_json() -> None:
    text = b"; Spamhaus DROP List\n1.4.0.0/17 ; SBL256893\n2a06:e480::/29 ; SBL301771\nAS260 ; AE\n"
    feed = parse_feed(text, FeedFormat.SPAMHAUS)
    assert (feed.cidrs, feed.ipv6, feed.comments, feed.garbage) == (2, 1, 1, 1)
    json_lines = (
        b'{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}\n'
        b'{"type":"metadata","timestamp":1723542601,"size":1234,"records":1}\n'
        b'{"sblid":"SBL1"}\n'
    )
    for fmt in (FeedFormat.SPAMHAUS, FeedFormat.AUTO):
        feed = parse_feed(json_lines, fmt)
        assert (feed.cidrs, feed.comments, feed.garbage) == (1, 1, 1)


DSHIELD = (
    b"#   comments: info@dshield.org\n"
    b"Start\tEnd\tNetblock\tAttacks\tName\tCountry\temail\n"
    b"43.229.53.0\t43.229.53.255\t24\t788\tJapan Inet\tJP\tadmin@v6nic.net\n"
    b"194.63.140.0\t194.63.140.255\t24\t585\t\t\t\n"
    b"5.5.5.9\t5.5.5.1\t24\t1\t\t\t\n"
)


def test_dshield() -> None:
    feed = parse_feed(DSHIELD, FeedFormat.DSHIELD)
    assert set(feed.nets4) == {net("43.229.53.0/24"), net("194.63.140.0/24")}
    assert (feed.comments, feed.garbage) == (2, 1)  # the column header counts as a comment
    for fmt in (FeedFormat.AUTO, FeedFormat.FIRST_COLUMN):
        other = parse_feed(DSHIELD, fmt)  # "IP<TAB>IP" is a range there too; the header is garbage
        assert other.nets4 == feed.nets4
        assert other.garbage == 2


DATAPLANE = (
    b"# ASN  |  ASname  |  saddr  |  utc  |  category\n"
    b"NA           |  NA                 |       5.157.7.82  |  2016-12-01 20:41:09  |  sshclient\n"
    b"394472       |  SWOI-ASN - SWOI, US |  104.241.232.238  |  2016-12-05 01:49:19  |  sshclient\n"
    b"394473       |  MOAS duplicate      |  104.241.232.238  |  2016-12-05 01:49:19  |  sshclient\n"
    b"14080 | Telmex Colombia S.A., CO |\n"
)


def test_dataplane() -> None:
    feed = parse_feed(DATAPLANE, FeedFormat.DATAPLANE)
    assert set(feed.ips4) == {ip4("5.157.7.82"), ip4("104.241.232.238")}
    assert (feed.duplicates, feed.garbage, feed.comments) == (1, 1, 1)
    auto = parse_feed(DATAPLANE)  # the first column is an ASN: every data line is garbage
    assert (auto.entries, auto.garbage) == (0, 4)


@pytest.mark.parametrize("fmt", list(FeedFormat))
def test_empty_feed(fmt: FeedFormat) -> None:
    feed = parse_feed(b"", fmt)
    assert isinstance(feed, ParsedFeed)
    assert (feed.entries, feed.lines, feed.addresses) == (0, 0, 0)
