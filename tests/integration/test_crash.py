"""Issue #4 crash test: 50,000 events in flight, ``kill -9`` of analysis and then response at random
moments, restarts; every event yields its finding and every finding its policy link exactly once
(counted in PostgreSQL), and the dead-letter streams hold only the deliberately poisoned messages."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis

from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.redis, pytest.mark.slow]

EVENTS = 50_000
POISON = 3
NAMESPACES = [f"team-{i}" for i in range(8)]
KINDS = [("T1059.004", "Reverse shell connection", "nc"), ("T1046", "Network scanner started", "nmap")]


def _alerts(start: int, n: int, now: datetime) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        technique, rule, proc = KINDS[i % 2]
        out.append(
            {
                "hostname": "node-1",
                "output": f"{rule} (proc={proc} n={i})",
                "priority": "Critical",
                "rule": rule,
                "source": "syscall",
                "tags": ["container", technique],
                "time": (now - timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
                "output_fields": {
                    "k8s.ns.name": NAMESPACES[i % len(NAMESPACES)],
                    "k8s.pod.name": f"app-{i % 50}",
                    "container.id": f"{i % 50:012d}",
                    "proc.name": proc,
                    "proc.exepath": f"/usr/bin/{proc}",
                    "evt.num": i,
                },
            }
        )
    return out


@pytest.fixture
def stack(tmp_path: Path, scratch_database_url: str, redis_url: str, redis_prefix: str) -> Iterator[Stack]:
    with Stack.migrated(
        tmp_path,
        database_url=scratch_database_url,
        redis_url=redis_url,
        prefix=redis_prefix,
        extra_env={
            # Every kill re-delivers the batch in hand; allow for several kills before a
            # message counts as poison. Reclaim quickly after a restart.
            "QCDR_STREAM_MAX_DELIVERIES": "25",
            "QCDR_STREAM_CLAIM_IDLE_MS": "3000",
            # a killed analysis holds its lease until it expires; the restarted one waits that long
            "QCDR_LEADER_LEASE_S": "2",
            "QCDR_POLLER_ENABLED": "false",
            "QCDR_EVENTS_RATE_PER_S": "1000000",
            "QCDR_EVENTS_RATE_BURST": "1000000",
        },
        services=("ingest", "analysis", "response"),
    ) as s:
        yield s


async def _count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def count(url: str, sql: str) -> int:
    return asyncio.run(_count(url, sql))


@pytest.mark.timeout(900)
def test_kill_9_analysis_and_response_under_load(stack: Stack, redis_url: str, redis_prefix: str) -> None:
    db = stack.env["DATABASE_URL"]
    ingest = stack.serve("ingest", QCDR_BACKGROUND_WORKERS="true")
    analysis = stack.consume("analysis", QCDR_CONSUMER_NAME="analysis-0")
    response = stack.consume("response", QCDR_CONSUMER_NAME="response-0")
    headers = {"Authorization": f"Bearer {stack.env['QCDR_API_TOKEN']}", "Content-Type": "application/json"}
    rng = random.Random(4)
    now = datetime.now(UTC)
    r = redis.Redis.from_url(redis_url)
    with httpx.Client(headers=headers, timeout=60) as client:
        for start in range(0, EVENTS, 2500):
            resp = client.post(
                f"{ingest.url}/v1/events/falco", content=orjson.dumps(_alerts(start, 2500, now))
            )
            assert resp.status_code in (200, 202), resp.text
            if start == 10_000:
                for n in range(POISON):  # not envelopes at all, straight onto the stream
                    r.xadd(
                        f"{redis_prefix}:ingest:events",
                        {"type": "ingest.event_observed", "data": f"poison {n}"},
                    )
            if start in (15_000, 32_500):
                time.sleep(rng.uniform(0.2, 1.5))
                analysis.restart()

    deadline = time.monotonic() + 420
    killed_response = 0
    while time.monotonic() < deadline:
        findings = count(db, "SELECT count(*) FROM analysis_findings")
        links = count(db, "SELECT count(*) FROM response_finding_policy")
        if (links > 5_000 and killed_response == 0) or (links > 25_000 and killed_response == 1):
            time.sleep(rng.uniform(0.1, 1.0))
            response.restart()
            killed_response += 1
        if findings >= EVENTS and links >= EVENTS:
            break
        time.sleep(1.0)
    logs = f"analysis:\n{analysis.tail()}\nresponse:\n{response.tail()}"
    assert analysis.restarts == 2
    assert killed_response == 2, logs
    assert count(db, "SELECT count(*) FROM analysis_findings") == EVENTS, logs
    assert count(db, "SELECT count(DISTINCT id) FROM analysis_findings") == EVENTS
    assert count(db, "SELECT count(*) FROM ingest_events") == EVENTS
    assert count(db, "SELECT count(*) FROM response_finding_policy") == EVENTS, logs
    assert count(db, "SELECT count(DISTINCT finding_id) FROM response_finding_policy") == EVENTS
    dead = r.xrange(f"{redis_prefix}:ingest:events:dlq")
    assert len(dead) == POISON
    assert all(fields[b"data"].startswith(b"poison") for _, fields in dead)
    assert r.xlen(f"{redis_prefix}:analysis:findings:dlq") == 0
