"""``--feeds FILE``: a YAML list of feeds; every mistake is one loud line naming the entry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from qcdr_ingest.intel.feeds import (
    DEFAULT_FEEDS,
    FeedConfigError,
    check_url,
    format_duration,
    load_feeds,
    parse_duration,
    parse_feeds,
)
from qcdr_ingest.intel.model import FeedFormat


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(text)
    return path


def test_a_full_feeds_file(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    path = write(
        tmp_path,
        """
- name: feodo-c2
  url: https://feodotracker.abuse.ch/downloads/ipblocklist.txt
  category: c2
  may_be_empty: true
- name: drop
  url: https://www.spamhaus.org/drop/drop.txt
  category: hijacked
  format: spamhaus
  min_interval: 1h
- name: local
  url: file:lists/mine.txt
  category: custom
  min_interval: 3600
  enabled: false
- name: quick
  url: http://127.0.0.1:8080/x.txt?key=abc
  category: test
  min_interval: "90"
""",
    )
    feeds = load_feeds(path)
    assert [feed.name for feed in feeds] == ["feodo-c2", "drop", "local", "quick"]
    assert feeds[0].may_be_empty
    assert feeds[0].min_interval == timedelta(minutes=15)
    assert feeds[1].format is FeedFormat.SPAMHAUS
    assert feeds[1].min_interval == timedelta(hours=1)
    assert feeds[2].url == (tmp_path / "lists" / "mine.txt").resolve().as_uri()
    assert feeds[2].min_interval == timedelta(hours=1)
    assert not feeds[2].enabled
    assert feeds[3].min_interval == timedelta(seconds=90)


def test_an_empty_list_is_allowed_but_an_empty_file_is_not(tmp_path: Path) -> None:
    assert load_feeds(write(tmp_path, "[]\n")) == []
    with pytest.raises(FeedConfigError, match=r"feeds.yaml: expected a list of feeds, got nothing$"):
        load_feeds(write(tmp_path, "# nothing\n"))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "- {name: tor, url: 'https://x.example/a', category: tor, colour: red}",
            "entry 1 (tor): colour: unknown key",
        ),
        ("- {name: tor, url: 'ftp://x.example/a', category: tor}", "entry 1 (tor): URL has scheme 'ftp'"),
        ("- {name: tor, url: 'x.example/a', category: tor}", "entry 1 (tor): URL has no scheme"),
        ("- {name: tor, url: 'https:///a', category: tor}", "entry 1 (tor): URL has no host"),
        ("- {name: tor, url: 'https://x:99999/a', category: tor}", "entry 1 (tor): URL has a bad port"),
        (
            "- {name: tor, url: 'file://server/share/a', category: tor}",
            "entry 1 (tor): file URL names a host",
        ),
        (
            "- {name: tor, url: 'https://x.example/a', category: tor, min_interval: soon}",
            "entry 1 (tor): min_interval: not a duration: 'soon'",
        ),
        (  # timedelta overflowed: an OverflowError, not one line naming the entry
            "- {name: tor, url: 'https://x.example/a', category: tor, min_interval: 99999999999999d}",
            "entry 1 (tor): min_interval: duration is not a number of at most 100 years",
        ),
        ("- {name: Tor!, url: 'https://x.example/a', category: tor}", "entry 1 (Tor!): name: String should"),
        ("- {name: tor, url: 'https://x.example/a'}", "entry 1 (tor): category: Field required"),
        ("- {name: tor, url: 'https://x.example/a', category: tor, format: xml}", "entry 1 (tor): format:"),
        ("- just-a-string", "entry 1: expected a mapping, got str"),
        (
            "- {name: drop, url: 'https://www.spamhaus.org/drop/drop.txt', category: x, min_interval: 5m}",
            "entry 1 (drop): min_interval 5m is below this source's limit of 1h",
        ),
    ],
)
def test_mistakes_fail_loudly_on_one_line(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(FeedConfigError) as caught:
        load_feeds(write(tmp_path, entry + "\n"))
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'feeds.yaml'}: ")
    assert message in text
    assert "\n" not in text


def test_duplicate_names_name_both_entries(tmp_path: Path) -> None:
    text = """
- {name: tor, url: 'https://a.example/x', category: tor}
- {name: et, url: 'https://b.example/x', category: compromised}
- {name: tor, url: 'https://c.example/x', category: tor}
"""
    with pytest.raises(FeedConfigError, match=r"entry 3 \(tor\): duplicate name 'tor' \(also entry 1\)$"):
        load_feeds(write(tmp_path, text))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FeedConfigError, match="cannot read: No such file or directory"):
        load_feeds(tmp_path / "missing.yaml")
    with pytest.raises(FeedConfigError, match=r"not valid YAML at line \d+, column \d+: expected ','"):
        load_feeds(write(tmp_path, "- name: a\n  url: [unclosed\n"))
    with pytest.raises(FeedConfigError, match="expected a list of feeds, got dict"):
        load_feeds(write(tmp_path, "feeds: []\n"))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"- name: a\n  url: \xff\xfe\n")
    with pytest.raises(FeedConfigError, match=rf"^{binary}: not UTF-8 text \(byte 17\)$"):
        load_feeds(binary)


def test_parse_feeds_takes_loaded_data() -> None:
    feeds = parse_feeds([{"name": "a", "url": "https://a.example/x", "category": "c"}], source="inline")
    assert feeds[0].name == "a"
    with pytest.raises(
        FeedConfigError, match=r"^inline: entry 1 \(a\): url: Input should be a valid string$"
    ):
        parse_feeds([{"name": "a", "url": 5, "category": "c"}], source="inline")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("1h30m", 5400), ("3600", 3600), (3600, 3600), (1.5, 1.5), ("2d", 172800),
     ("500ms", 0.5), ("0", 0), (" 10S ", 10)],
)  # fmt: skip
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 30m", "-5", "1h-5m", True])
def test_parse_duration_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(minutes=21)) == "21m"
    assert format_duration(timedelta(hours=3, minutes=4, seconds=5)) == "3h4m"
    assert format_duration(timedelta(days=2, hours=1)) == "2d1h"


def test_check_url_keeps_http_urls_as_given() -> None:
    url = "https://feeds.example/list.txt?key=abc&x=1"
    assert check_url(url) == url
    assert check_url("file:///srv/feeds/a.txt") == "file:///srv/feeds/a.txt"
    assert check_url("file://localhost/srv/a.txt") == "file:///srv/a.txt"


def test_default_feeds() -> None:
    by_name = {feed.name: feed for feed in DEFAULT_FEEDS}
    assert list(by_name) == [
        "feodo-c2",
        "tor-exit",
        "emerging-threats",
        "blocklist-de",
        "cinsscore",
        "spamhaus-drop",
    ]
    assert {name: feed.category for name, feed in by_name.items()} == {
        "feodo-c2": "c2",
        "tor-exit": "tor",
        "emerging-threats": "compromised",
        "blocklist-de": "attacker",
        "cinsscore": "scanner",
        "spamhaus-drop": "hijacked",
    }
    assert by_name["feodo-c2"].url == "https://feodotracker.abuse.ch/downloads/ipblocklist.txt"
    assert by_name["tor-exit"].url == "https://check.torproject.org/torbulkexitlist"
    assert (
        by_name["emerging-threats"].url == "https://rules.emergingthreats.net/blockrules/compromised-ips.txt"
    )
    assert by_name["blocklist-de"].url == "https://lists.blocklist.de/lists/all.txt"
    assert by_name["cinsscore"].url == "https://cinsscore.com/list/ci-badguys.txt"
    assert by_name["spamhaus-drop"].url == "https://www.spamhaus.org/drop/drop.txt"
    assert [name for name, feed in by_name.items() if feed.may_be_empty] == ["feodo-c2"]
    drop = by_name["spamhaus-drop"]
    assert drop.format is FeedFormat.SPAMHAUS
    assert drop.min_interval == timedelta(hours=1)
    assert all(feed.enabled for feed in DEFAULT_FEEDS)
    # the defaults pass the same checks as a user's file
    assert parse_feeds([feed.model_dump() for feed in DEFAULT_FEEDS]) == list(DEFAULT_FEEDS)
