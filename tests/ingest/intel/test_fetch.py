"""FeedFetcher against a real HTTP server on 127.0.0.1 serving the shared threat-intel corpus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from qcdr_ingest.intel.fetch import EMPTY_WARNING, FeedFetcher, FeedResult, has_data_lines
from qcdr_ingest.intel.model import FeedAttempt, FeedSpec, FeedStatus, StoredFeed
from qcdr_ingest.intel.state_files import FileFeedStateStore

from tests.ingest.intel.conftest import T0, FakeClock, FeedServer, ResetServer

FEODO = "firehol-blocklist-ipsets/feodo.ipset"
DROP = "intelmq-samples/intelmq/tests/bots/parsers/spamhaus/drop.txt"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def store(tmp_path: Path) -> FileFeedStateStore:
    return FileFeedStateStore(tmp_path)


def spec(name: str, url: str, **overrides: Any) -> FeedSpec:
    values: dict[str, Any] = {"name": name, "url": url, "category": "test"}
    values.update(overrides)
    return FeedSpec(**values)


def fetcher(
    store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock, **overrides: Any
) -> FeedFetcher:
    options: dict[str, Any] = {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.001, "max_bytes": 1 << 20}
    options.update(overrides)
    return FeedFetcher(store, http=http, clock=clock, **options)


def corpus_bytes(server: FeedServer, path: str) -> bytes:
    assert server.corpus is not None
    return (server.corpus / path).read_bytes()


# ---------------------------------------------------------------------- the life of a feed


async def test_fresh_then_304_then_skip_then_stale_then_recovered(
    corpus_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    path = f"/corpus/{FEODO}"
    feed = spec("feodo", corpus_server.url + path, min_interval=timedelta(minutes=15))
    fetch = fetcher(store, http, clock)
    original = corpus_bytes(corpus_server, FEODO)

    fresh = await fetch.fetch(feed)
    assert fresh.status is FeedStatus.FRESH
    assert fresh.body == original
    assert (fresh.http_status, fresh.size_bytes, fresh.downloaded_bytes) == (
        200,
        len(original),
        len(original),
    )
    assert fresh.age == timedelta(0)
    assert fresh.fetched_at == T0
    assert fresh.warnings == ()
    first = corpus_server.requests_to(path)[0]
    assert "if-none-match" not in first.headers
    assert "if-modified-since" not in first.headers
    saved = await store.load("feodo")
    assert saved is not None
    assert saved.body == original
    assert saved.etag

    # after min_interval: a conditional GET, answered 304
    clock.advance(timedelta(minutes=20))
    confirmed = await fetch.fetch(feed)
    assert confirmed.status is FeedStatus.NOT_MODIFIED
    assert confirmed.body == original
    assert confirmed.http_status == 304
    assert confirmed.downloaded_bytes == 0
    assert confirmed.age == timedelta(0)
    conditional = corpus_server.requests_to(path)[-1]
    assert conditional.headers["if-none-match"] == saved.etag
    assert conditional.headers["if-modified-since"] == saved.last_modified
    again = await store.load("feodo")
    assert again is not None
    assert again.fetched_at == clock.now
    assert again.attempted_at == clock.now

    # within min_interval: no request at all, the stored copy is used
    clock.advance(timedelta(minutes=1))
    before = len(corpus_server.seen)
    skipped = await fetch.fetch(feed)
    assert len(corpus_server.seen) == before
    assert skipped.status is FeedStatus.SKIPPED
    assert skipped.body == original
    assert skipped.age == timedelta(minutes=1)
    assert skipped.warnings == ()

    # the source fails: the last good copy, with a warning saying how old it is
    clock.advance(timedelta(minutes=20))
    corpus_server.failing.add(path)
    stale = await fetch.fetch(feed)
    assert stale.status is FeedStatus.STALE
    assert stale.body == original
    assert stale.http_status == 500
    assert stale.error == "HTTP 500 Internal Server Error"
    assert stale.age == timedelta(minutes=21)
    assert stale.warnings == (
        "fetch failed (HTTP 500 Internal Server Error); using the last good copy from 21m ago",
    )
    assert len(corpus_server.seen) == before + 2  # one retry for a 5xx
    kept = await store.load("feodo")
    assert kept is not None
    assert kept.body == original
    assert kept.last_error == stale.error
    assert kept.fetched_at == T0 + timedelta(minutes=20)
    assert kept.attempted_at == clock.now

    # a failed attempt counts for min_interval too; the warning says why the copy is old
    clock.advance(timedelta(minutes=5))
    quiet = await fetch.fetch(feed)
    assert quiet.status is FeedStatus.SKIPPED
    assert quiet.body == original
    assert len(corpus_server.seen) == before + 2
    assert quiet.warnings == (
        "the last attempt 5m ago failed (HTTP 500 Internal Server Error); using the copy from 26m ago",
    )

    # the source is back and unchanged: 304, and the error is forgotten
    corpus_server.failing.clear()
    clock.advance(timedelta(minutes=15))
    back = await fetch.fetch(feed)
    assert back.status is FeedStatus.NOT_MODIFIED
    assert back.error is None
    recovered = await store.load("feodo")
    assert recovered is not None
    assert recovered.last_error is None


async def test_spamhaus_drop_is_requested_at_most_hourly(
    corpus_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    path = f"/corpus/{DROP}"
    feed = spec("spamhaus-drop", corpus_server.url + path, format="spamhaus", min_interval=timedelta(hours=1))
    fetch = fetcher(store, http, clock)
    assert (await fetch.fetch(feed)).status is FeedStatus.FRESH
    for _ in range(11):  # a run every 5 minutes for the rest of the hour
        clock.advance(timedelta(minutes=5))
        assert (await fetch.fetch(feed)).status is FeedStatus.SKIPPED
    assert len(corpus_server.requests_to(path)) == 1
    clock.advance(timedelta(minutes=5))
    assert (await fetch.fetch(feed)).status is FeedStatus.NOT_MODIFIED
    assert len(corpus_server.requests_to(path)) == 2


async def test_if_modified_since_alone_gets_304(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    feed_server.bodies["lm"] = b"203.0.113.9\n"
    feed = spec("lm", feed_server.url + "/mem/lm?validators=lm", min_interval=timedelta(0))
    fetch = fetcher(store, http, clock)
    assert (await fetch.fetch(feed)).status is FeedStatus.FRESH
    second = await fetch.fetch(feed)
    assert second.status is FeedStatus.NOT_MODIFIED
    assert second.body == b"203.0.113.9\n"
    last = feed_server.seen[-1]
    assert "if-none-match" not in last.headers
    assert "if-modified-since" in last.headers


async def test_a_changed_feed_replaces_the_copy(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    feed_server.bodies["tor"] = b"198.51.100.1\n"
    feed = spec("tor", feed_server.url + "/mem/tor", min_interval=timedelta(0))
    fetch = fetcher(store, http, clock)
    first = await fetch.fetch(feed)
    feed_server.bodies["tor"] = b"198.51.100.1\n198.51.100.2\n"
    second = await fetch.fetch(feed)
    assert second.status is FeedStatus.FRESH
    assert second.body == b"198.51.100.1\n198.51.100.2\n"
    assert feed_server.seen[-1].headers["if-none-match"]  # asked conditionally, got the new list
    saved = await store.load("tor")
    assert saved is not None
    assert saved.body == second.body
    assert first.body != second.body


async def test_a_changed_url_is_fetched_now_without_validators(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    feed_server.bodies["a"] = b"192.0.2.1\n"
    feed_server.bodies["b"] = b"192.0.2.2\n"
    fetch = fetcher(store, http, clock)
    await fetch.fetch(spec("moved", feed_server.url + "/mem/a"))
    clock.advance(timedelta(minutes=1))
    moved = await fetch.fetch(spec("moved", feed_server.url + "/mem/b"))
    assert moved.status is FeedStatus.FRESH
    assert moved.body == b"192.0.2.2\n"
    assert "if-none-match" not in feed_server.seen[-1].headers


# ---------------------------------------------------------------------- failures


async def test_failure_without_a_copy_is_failed_and_respects_min_interval(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    feed = spec("down", feed_server.url + "/status/502")
    fetch = fetcher(store, http, clock)
    failed = await fetch.fetch(feed)
    assert failed.status is FeedStatus.FAILED
    assert failed.body is None
    assert not failed.usable
    assert failed.error == "HTTP 502 Bad Gateway"
    assert failed.http_status == 502
    assert await store.load("down") is None
    assert await store.last_attempt("down") == FeedAttempt(
        name="down", url=feed.url, attempted_at=T0, error="HTTP 502 Bad Gateway"
    )
    seen = len(feed_server.seen)
    clock.advance(timedelta(minutes=3))
    again = await fetch.fetch(feed)
    assert len(feed_server.seen) == seen  # not asked again before min_interval
    assert again.status is FeedStatus.FAILED
    assert (
        again.error
        == "not attempted: the last attempt 3m ago failed (HTTP 502 Bad Gateway); next attempt in 12m"
    )


async def test_client_errors_are_not_retried(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    result = await fetcher(store, http, clock, retries=3).fetch(spec("gone", feed_server.url + "/status/404"))
    assert result.status is FeedStatus.FAILED
    assert result.error == "HTTP 404 Not Found"
    assert len(feed_server.requests_to("/status/404")) == 1


async def test_server_errors_are_retried_briefly(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    feed_server.bodies["flaky"] = b"192.0.2.10\n"
    result = await fetcher(store, http, clock, retries=2).fetch(
        spec("flaky", feed_server.url + "/flaky/flaky?failures=2")
    )
    assert result.status is FeedStatus.FRESH
    assert result.body == b"192.0.2.10\n"
    assert feed_server.calls["flaky"] == 3


async def test_timeout_degrades_to_stale(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    copy = StoredFeed(
        name="slow", url=feed_server.url + "/slow?s=1.5", body=b"192.0.2.3\n", fetched_at=T0, attempted_at=T0
    )
    await store.save(copy)
    clock.advance(timedelta(hours=3, minutes=4))
    result = await fetcher(store, http, clock, timeout_s=0.2, retries=2).fetch(spec("slow", copy.url))
    assert result.status is FeedStatus.STALE
    assert result.body == b"192.0.2.3\n"
    assert result.error == "timed out after 0.2s"
    assert result.warnings == ("fetch failed (timed out after 0.2s); using the last good copy from 3h4m ago",)
    assert len(feed_server.requests_to("/slow")) == 1  # a timeout is not retried


async def test_connection_refused_is_failed(
    refused_url: str, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    result = await fetcher(store, http, clock).fetch(spec("nobody", refused_url))
    assert result.status is FeedStatus.FAILED
    assert result.error is not None
    assert result.error.startswith("connection failed: ConnectError")


async def test_connection_reset_is_retried_then_stale(
    reset_server: ResetServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await store.save(
        StoredFeed(name="rst", url=reset_server.url, body=b"192.0.2.4\n", fetched_at=T0, attempted_at=T0)
    )
    clock.advance(timedelta(hours=1))
    result = await fetcher(store, http, clock, retries=2).fetch(spec("rst", reset_server.url))
    assert result.status is FeedStatus.STALE
    assert result.body == b"192.0.2.4\n"
    assert result.error is not None
    assert result.error.startswith("connection failed:")
    assert reset_server.connections == 3


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/big?n=5000", "larger than 1000 bytes (Content-Length 5000)"),
        ("/big-stream?n=50000", "larger than 1000 bytes"),
    ],
)
async def test_oversize_bodies_are_refused(
    path: str,
    expected: str,
    feed_server: FeedServer,
    store: FileFeedStateStore,
    http: httpx.AsyncClient,
    clock: FakeClock,
) -> None:
    fetch = fetcher(store, http, clock, max_bytes=1000)
    failed = await fetch.fetch(spec("huge", feed_server.url + path))
    assert failed.status is FeedStatus.FAILED
    assert failed.error == expected
    assert failed.downloaded_bytes < 50000  # the stream was cut, not read to the end
    await store.save(
        StoredFeed(
            name="huge", url=feed_server.url + path, body=b"192.0.2.5\n", fetched_at=T0, attempted_at=T0
        )
    )
    clock.advance(timedelta(hours=1))
    stale = await fetch.fetch(spec("huge", feed_server.url + path))
    assert stale.status is FeedStatus.STALE
    assert stale.body == b"192.0.2.5\n"
    assert stale.error == expected


# ---------------------------------------------------------------------- empty feeds


async def test_an_empty_feed_is_empty_not_failed(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    fetch = fetcher(store, http, clock)
    feodo = await fetch.fetch(spec("feodo", feed_server.url + "/empty", may_be_empty=True))
    assert feodo.status is FeedStatus.EMPTY
    assert feodo.body == b""
    assert feodo.warnings == ()
    assert feodo.error is None
    assert feodo.usable
    saved = await store.load("feodo")
    assert saved is not None
    assert saved.body == b""

    other = await fetch.fetch(spec("blocklist", feed_server.url + "/comments"))
    assert other.status is FeedStatus.EMPTY
    assert other.warnings == (EMPTY_WARNING,)
    assert other.body is not None
    assert not has_data_lines(other.body)


async def test_a_stored_empty_copy_keeps_its_warning(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    fetch = fetcher(store, http, clock)
    feed = spec("cins", feed_server.url + "/comments")
    await fetch.fetch(feed)
    clock.advance(timedelta(minutes=1))
    skipped = await fetch.fetch(feed)
    assert skipped.status is FeedStatus.SKIPPED
    assert skipped.warnings == (EMPTY_WARNING,)


def test_has_data_lines() -> None:
    assert not has_data_lines(b"")
    assert not has_data_lines(b"# a\n; b\n \t\n\r\n")
    assert has_data_lines(b"# header\n  192.0.2.1  \n")
    assert has_data_lines(b"1.4.0.0/17 ; SBL256893")


# ---------------------------------------------------------------------- file://, disabled, odd specs


async def test_file_urls_are_read_every_time(
    shared_path: Path, tmp_path: Path, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    source = shared_path / "corpora" / "threat-intel" / FEODO
    feed = spec("local", source.as_uri(), min_interval=timedelta(hours=1))
    fetch = fetcher(store, http, clock)
    first = await fetch.fetch(feed)
    clock.advance(timedelta(minutes=1))
    second = await fetch.fetch(feed)
    for result in (first, second):
        assert result.status is FeedStatus.FRESH
        assert result.body == source.read_bytes()
        assert result.http_status is None
        assert result.downloaded_bytes == 0
        assert result.size_bytes == source.stat().st_size

    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"# nothing today\n")
    assert (await fetch.fetch(spec("nothing", empty.as_uri(), may_be_empty=True))).status is FeedStatus.EMPTY

    small = fetcher(store, http, clock, max_bytes=100)
    too_big = await small.fetch(spec("local", source.as_uri()))
    assert too_big.status is FeedStatus.STALE
    assert too_big.error == "larger than 100 bytes"

    missing = await fetch.fetch(spec("missing", (tmp_path / "nope.txt").as_uri()))
    assert missing.status is FeedStatus.FAILED
    assert missing.error == f"cannot read {tmp_path / 'nope.txt'}: No such file or directory"


async def test_disabled_feeds_do_no_io(
    feed_server: FeedServer, tmp_path: Path, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    store = FileFeedStateStore(tmp_path)
    result = await fetcher(store, http, clock).fetch(spec("off", feed_server.url + "/empty", enabled=False))
    assert result == FeedResult(result.spec, FeedStatus.DISABLED)
    assert feed_server.seen == []
    assert not (tmp_path / "feeds").exists()


async def test_an_unsupported_scheme_fails_cleanly(
    store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    result = await fetcher(store, http, clock).fetch(spec("ftp", "ftp://example.invalid/list.txt"))
    assert result.status is FeedStatus.FAILED
    assert result.error == "unsupported URL scheme 'ftp'"


async def test_api_keys_in_urls_never_reach_messages_or_logs(
    feed_server: FeedServer,
    store: FileFeedStateStore,
    http: httpx.AsyncClient,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await store.save(
        StoredFeed(
            name="keyed",
            url="https://old.example/x?key=OLD",
            body=b"1.1.1.1\n",
            fetched_at=T0,
            attempted_at=T0,
        )
    )
    result = await fetcher(store, http, clock).fetch(
        spec("keyed", feed_server.url + "/status/500?key=TOPSECRET")
    )
    assert result.status is FeedStatus.STALE
    text = " ".join([result.error or "", *result.warnings])
    assert "previous URL https://old.example/x?***" in text
    captured = capsys.readouterr()
    for secret in ("TOPSECRET", "OLD"):
        assert secret not in text
        assert secret not in captured.out
        assert secret not in captured.err


# ---------------------------------------------------------------------- many feeds


async def test_fetch_all_keeps_order_and_bounds_concurrency(
    feed_server: FeedServer, store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    group = uuid.uuid4().hex
    specs = [spec(f"slow-{i}", f"{feed_server.url}/slow?s=0.15&group={group}&i={i}") for i in range(5)]
    specs.append(spec("off", feed_server.url + "/empty", enabled=False))
    results = await fetcher(store, http, clock, concurrency=2).fetch_all(specs)
    assert [result.name for result in results] == [s.name for s in specs]
    assert [result.status for result in results] == [FeedStatus.FRESH] * 5 + [FeedStatus.DISABLED]
    assert feed_server.max_in_flight[group] == 2


async def test_fetch_all_refuses_duplicate_names(
    store: FileFeedStateStore, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    twice = [spec("same", "https://a.example/x"), spec("same", "https://b.example/y")]
    with pytest.raises(ValueError, match="duplicate feed names: same"):
        await fetcher(store, http, clock).fetch_all(twice)


class _BrokenStore(FileFeedStateStore):
    async def load(self, name: str) -> StoredFeed | None:
        if name == "broken":
            raise ConnectionError("state store unreachable")
        return await super().load(name)


async def test_one_feed_crashing_does_not_stop_the_others(
    feed_server: FeedServer, tmp_path: Path, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    feed_server.bodies["ok"] = b"192.0.2.9\n"
    store = _BrokenStore(tmp_path)
    results = await fetcher(store, http, clock).fetch_all(
        [spec("broken", feed_server.url + "/mem/ok"), spec("fine", feed_server.url + "/mem/ok")]
    )
    assert results[0].status is FeedStatus.FAILED
    assert results[0].error == "ConnectionError: state store unreachable"
    assert results[1].status is FeedStatus.FRESH


async def test_owns_its_client_when_given_none(tmp_path: Path, clock: FakeClock) -> None:
    async with FeedFetcher(FileFeedStateStore(tmp_path), clock=clock) as fetch:
        source = tmp_path / "list.txt"
        source.write_bytes(b"192.0.2.77\n")
        assert (await fetch.fetch(spec("mine", source.as_uri()))).status is FeedStatus.FRESH
