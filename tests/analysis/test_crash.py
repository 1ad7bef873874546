"""``kill -9`` the analysis consumer at random moments: every event still yields its findings
exactly once (counted in Postgres), every finding is published, the DLQ holds only the poison."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from qcdr_common.db import make_engine
from qcdr_common.streams import Envelope, dlq_key, new_envelope, publish, stream_key
from redis.asyncio import Redis
from sqlalchemy import text

from tests.analysis.conftest import event_envelope, make_event, tetragon_event

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration, pytest.mark.slow]

NSENTER = {
    "process_exec": {
        "process": {
            "binary": "/usr/bin/nsenter",
            "arguments": "-t 1 -m -u -n -i -p bash",
            "pod": {"namespace": "default", "name": "privileged-pod"},
        }
    }
}
BENIGN = {
    "process_exec": {"process": {"binary": "/usr/sbin/nginx", "pod": {"namespace": "web", "name": "w"}}}
}
KILLS = 5


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # a process the test kills -9 on purpose
            [sys.executable, "-m", "qcdr_analysis", "consume"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def counts(db: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        evidence = await conn.fetch("SELECT detector, evidence_event_ids FROM analysis_findings")
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM analysis_received) AS received,"
            " (SELECT count(*) FROM analysis_outbox) AS outbox,"
            " (SELECT count(*) FROM analysis_outbox WHERE published_at IS NULL) AS unpublished"
        )
        envelope_ids = {r[0] for r in await conn.fetch("SELECT envelope_id FROM analysis_findings")}
    finally:
        await conn.close()
    assert row is not None
    per_event = Counter((r["detector"], eid) for r in evidence for eid in r["evidence_event_ids"])
    return {**dict(row), "findings": len(evidence), "per_event": per_event, "envelope_ids": envelope_ids}


async def test_kill_9_at_random_moments_yields_exactly_once(
    db: str, redis_url: str, redis_client: Any, redis_prefix: str, tmp_path: Path
) -> None:
    redis: Redis = redis_client
    engine = make_engine(db)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO intel_indicators (cidr, feeds, confidence)"
                " VALUES ('198.51.100.0/24', '{feodo}', 90)"
            )
        )
    await engine.dispose()

    falco = [make_event(source="falco") for _ in range(3000)]
    qualys = [make_event(source="qualys", category="Crypto_Mining") for _ in range(200)]
    attacks = [tetragon_event(NSENTER) for _ in range(1000)]
    quiet = [tetragon_event(BENIGN) for _ in range(500)]
    intel = [make_event(source="hubble", category="flow", network={"ip": "198.51.100.9"}) for _ in range(300)]
    events = falco + qualys + attacks + quiet + intel
    random.Random(4).shuffle(events)
    envelopes = [event_envelope(e) for e in events]
    poison = [
        new_envelope(
            "ingest.event_observed",
            {"id": n},
            source="ingest",
            cluster_id="t",
            occurred_at=envelopes[0].occurred_at,
        )
        for n in range(3)
    ]
    for i, bad in enumerate(poison):
        envelopes.insert(1000 * (i + 1), bad)
    await publish(redis, stream_key(redis_prefix, "ingest:events"), envelopes, maxlen=1_000_000)
    expected = {("source", e.id) for e in falco + qualys} | {("attack_rules", e.id) for e in attacks}
    expected |= {("intel_match", e.id) for e in intel}

    env = {
        **os.environ,
        "DATABASE_URL": db,
        "REDIS_URL": redis_url,
        "QCDR_REDIS_PREFIX": redis_prefix,
        "QCDR_CONSUMER_NAME": "crash-test",  # the same name after a restart: it re-reads its pending
        "QCDR_CONSUME_METRICS_PORT": "0",
        "QCDR_STREAM_BATCH": "200",
        "QCDR_STREAM_CLAIM_IDLE_MS": "300",
        # a killed process keeps the analysis lease until it expires: the next waits that long
        "QCDR_LEADER_LEASE_S": "0.6",
        # every kill counts as a delivery of the batch in hand; keep the poison budget above KILLS
        "QCDR_STREAM_MAX_DELIVERIES": str(KILLS + 3),
        "QCDR_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "consume.log"
    rng = random.Random(7)
    received = []
    for _ in range(KILLS):
        before = (await counts(db))["received"]
        process = start(env, log)
        # kill while it works: once it has committed something, at a random moment
        deadline = time.monotonic() + 60
        while (await counts(db))["received"] == before and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # progress is in Postgres: polling is the only way to see it
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        received.append((await counts(db))["received"])
    assert received[-1] < len(envelopes) - len(poison), "the kills came too late to interrupt anything"

    process = start(env, log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = await counts(db)
            dead = await redis.xlen(dlq_key(redis_prefix, "ingest:events"))
            if now["findings"] >= len(expected) and now["unpublished"] == 0 and dead >= len(poison):
                break
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGTERM)  # graceful: finish the batch, exit 0
        assert process.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()

    final = await counts(db)
    assert set(final["per_event"]) == expected, log.read_text()[-3000:]
    assert max(final["per_event"].values()) == 1  # exactly once
    assert final["findings"] == final["outbox"] == len(expected)
    assert final["received"] == len(envelopes) - len(poison)
    assert final["unpublished"] == 0
    published = {
        Envelope.from_fields(f).id
        for _, f in await redis.xrange(stream_key(redis_prefix, "analysis:findings"))
    }
    assert published == final["envelope_ids"]  # every finding published (some maybe twice)
    letters = await redis.xrange(dlq_key(redis_prefix, "ingest:events"))
    assert sorted(Envelope.from_fields(f).id for _, f in letters) == sorted(p.id for p in poison)
    assert (await redis.xpending(stream_key(redis_prefix, "ingest:events"), "analysis"))["pending"] == 0
