"""Two analysis processes on one stream: one consumes under the lease, the other stands by; a
``kill -9`` of the consuming one hands the stream to the standby once the lease expires, and every
event still yields exactly one finding."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from tests.integration.stack import Proc, Stack
from tests.integration.test_crash import _alerts, count

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.redis]

EVENTS = 4_000
LEASE_S = "1.5"


@pytest.fixture
def stack(tmp_path: Path, scratch_database_url: str, redis_url: str, redis_prefix: str) -> Iterator[Stack]:
    with Stack.migrated(
        tmp_path,
        database_url=scratch_database_url,
        redis_url=redis_url,
        prefix=redis_prefix,
        extra_env={
            "QCDR_LEADER_LEASE_S": LEASE_S,
            "QCDR_STREAM_CLAIM_IDLE_MS": "2000",
            "QCDR_POLLER_ENABLED": "false",
            "QCDR_EVENTS_RATE_PER_S": "1000000",
            "QCDR_EVENTS_RATE_BURST": "1000000",
        },
        services=("ingest", "analysis"),
    ) as s:
        yield s


def _wait(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached in {seconds:g} s: {what}")


def test_the_standby_takes_over_from_a_killed_leader(stack: Stack, redis_url: str, redis_prefix: str) -> None:
    db = stack.env["DATABASE_URL"]
    r = redis.Redis.from_url(redis_url)
    lease_key = f"{redis_prefix}:analysis:leader"
    ingest = stack.serve("ingest")
    replicas: dict[str, Proc] = {
        name: stack.consume("analysis", name=name, QCDR_CONSUMER_NAME=name)
        for name in ("analysis-0", "analysis-1")
    }

    def holder() -> str | None:
        value = r.get(lease_key)
        return value.decode().rsplit(":", 1)[0] if value else None

    _wait(lambda: holder() in replicas, 30, "a replica holds the lease")
    first = holder()
    assert first is not None
    headers = {"Authorization": f"Bearer {stack.env['QCDR_API_TOKEN']}", "Content-Type": "application/json"}
    now = datetime.now(UTC)
    with httpx.Client(headers=headers, timeout=60) as client:

        def post(start: int, n: int) -> None:
            resp = client.post(f"{ingest.url}/v1/events/falco", content=orjson.dumps(_alerts(start, n, now)))
            assert resp.status_code in (200, 202), resp.text

        post(0, EVENTS // 2)
        _wait(lambda: count(db, "SELECT count(*) FROM analysis_findings") > 0, 60, "the leader consumes")
        consumers = {
            c["name"].decode() for c in r.xinfo_consumers(f"{redis_prefix}:ingest:events", "analysis")
        }
        assert consumers == {first}  # the standby never read
        replicas[first].kill9()  # mid-stream, holding the lease and maybe a batch
        post(EVENTS // 2, EVENTS // 2)

    second = next(name for name in replicas if name != first)
    _wait(lambda: holder() == second, 30, "the standby takes the lease")
    _wait(lambda: count(db, "SELECT count(*) FROM analysis_findings") >= EVENTS, 120, "every finding")
    logs = f"{first}:\n{replicas[first].tail()}\n{second}:\n{replicas[second].tail()}"
    assert count(db, "SELECT count(*) FROM analysis_findings") == EVENTS, logs
    assert count(db, "SELECT count(DISTINCT id) FROM analysis_findings") == EVENTS
    pending = r.xpending(f"{redis_prefix}:ingest:events", "analysis")
    assert pending["pending"] == 0, logs  # the dead leader's batch was claimed and acknowledged
