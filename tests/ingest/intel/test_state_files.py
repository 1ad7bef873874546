"""Once mode's intel state in files: atomic, and still there after a restart."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from qcdr_ingest.intel.model import FeedAttempt, Reputation, StoredFeed
from qcdr_ingest.intel.state_files import FileFeedStateStore, FileReputationCache, atomic_write

from tests.ingest.intel.conftest import T0


def feed(**overrides: object) -> StoredFeed:
    values: dict[str, object] = {
        "name": "tor-exit",
        "url": "https://check.torproject.org/torbulkexitlist",
        "body": b"185.220.101.1\n185.220.101.2\n",
        "etag": '"abc"',
        "last_modified": "Sat, 28 Feb 2026 06:00:00 GMT",
        "fetched_at": T0,
        "attempted_at": T0,
    }
    values.update(overrides)
    return StoredFeed.model_validate(values)


def no_temp_files(directory: Path) -> bool:
    return not [path for path in directory.rglob("*") if path.name.endswith(".tmp")]


async def test_feed_state_survives_a_restart(tmp_path: Path) -> None:
    saved = feed()
    await FileFeedStateStore(tmp_path).save(saved)
    restarted = FileFeedStateStore(tmp_path)
    assert await restarted.load("tor-exit") == saved
    assert await restarted.last_attempt("tor-exit") == FeedAttempt(
        name="tor-exit", url=saved.url, attempted_at=T0, error=None
    )
    assert (tmp_path / "feeds" / "tor-exit.body").read_bytes() == saved.body
    assert json.loads((tmp_path / "feeds" / "tor-exit.json").read_text())["etag"] == '"abc"'
    assert no_temp_files(tmp_path)


async def test_record_failure_keeps_the_last_good_body(tmp_path: Path) -> None:
    store = FileFeedStateStore(tmp_path)
    await store.save(feed())
    later = T0 + timedelta(hours=2)
    await store.record_failure(
        "tor-exit", "https://elsewhere.example/list", later, "HTTP 503 Service Unavailable"
    )
    loaded = await FileFeedStateStore(tmp_path).load("tor-exit")
    assert loaded == feed(attempted_at=later, last_error="HTTP 503 Service Unavailable")


async def test_a_feed_that_never_succeeded_has_an_attempt_but_no_copy(tmp_path: Path) -> None:
    store = FileFeedStateStore(tmp_path)
    await store.record_failure("new", "https://a.example/1", T0, "timed out after 30s")
    await store.record_failure("new", "https://a.example/2", T0 + timedelta(minutes=1), "HTTP 404 Not Found")
    assert await store.load("new") is None
    assert await store.last_attempt("new") == FeedAttempt(
        name="new",
        url="https://a.example/2",
        attempted_at=T0 + timedelta(minutes=1),
        error="HTTP 404 Not Found",
    )
    assert await store.load("never-seen") is None
    assert await store.last_attempt("never-seen") is None


async def test_a_body_newer_than_its_metadata_drops_the_validators(tmp_path: Path) -> None:
    store = FileFeedStateStore(tmp_path)
    await store.save(feed())
    # a crash after the body's rename and before the metadata's
    (tmp_path / "feeds" / "tor-exit.body").write_bytes(b"185.220.101.9\n")
    loaded = await store.load("tor-exit")
    assert loaded is not None
    assert loaded.body == b"185.220.101.9\n"
    assert loaded.etag is None
    assert loaded.last_modified is None


async def test_unreadable_state_is_ignored_not_fatal(tmp_path: Path) -> None:
    store = FileFeedStateStore(tmp_path)
    await store.save(feed())
    (tmp_path / "feeds" / "tor-exit.json").write_text("{not json")
    assert await store.load("tor-exit") is None
    await store.save(feed(name="other"))
    (tmp_path / "feeds" / "other.body").unlink()
    assert await store.load("other") is None


async def test_feed_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    store = FileFeedStateStore(tmp_path)
    for name in ("../etc", "a/b", "", ".hidden", "feed\n"):
        with pytest.raises(ValueError, match="not a feed name"):
            await store.load(name)


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [path.name for path in target.parent.iterdir()] == ["file.bin"]


# ---------------------------------------------------------------------- reputation


def answer(ip: str, score: int, **overrides: object) -> Reputation:
    values: dict[str, object] = {"ip": ip, "score": score, "checked_at": T0}
    values.update(overrides)
    return Reputation.model_validate(values)


async def test_reputation_survives_a_restart(tmp_path: Path) -> None:
    full = answer(
        "45.95.0.1",
        90,
        total_reports=321,
        usage_type="Data Center/Web Hosting/Transit",
        country_code="NL",
        is_whitelisted=False,
        is_tor=True,
        last_reported_at=T0 - timedelta(days=2),
    )
    await FileReputationCache(tmp_path).put_many([full, answer("2001:DB8::1", 0)])
    restarted = FileReputationCache(tmp_path)
    found = await restarted.get_many(["45.95.0.1", "2001:db8:0::1", "192.0.2.1", "not-an-ip"])
    assert found == {"45.95.0.1": full, "2001:db8:0::1": answer("2001:db8::1", 0)}
    assert no_temp_files(tmp_path)


async def test_reputation_newer_answers_win(tmp_path: Path) -> None:
    cache = FileReputationCache(tmp_path)
    await cache.put_many([answer("45.95.0.2", 10, checked_at=T0 + timedelta(hours=1))])
    await cache.put_many([answer("45.95.0.2", 80)])  # older: ignored
    await cache.put_many(
        [answer("45.95.0.3", 5), answer("45.95.0.3", 60, checked_at=T0 + timedelta(minutes=1))]
    )
    found = await FileReputationCache(tmp_path).get_many(["45.95.0.2", "45.95.0.3"])
    assert (found["45.95.0.2"].score, found["45.95.0.3"].score) == (10, 60)


async def test_reputation_rejects_non_ips_and_shrugs_off_a_corrupt_file(tmp_path: Path) -> None:
    cache = FileReputationCache(tmp_path)
    with pytest.raises(ValueError, match=r"not an IP address: 'example\.com'"):
        await cache.put_many([answer("example.com", 1)])
    (tmp_path / "reputation.json").write_text('{"version": 99}')
    assert await FileReputationCache(tmp_path).get_many(["45.95.0.1"]) == {}
    await cache.put_many([])
    assert await cache.get_many([]) == {}
