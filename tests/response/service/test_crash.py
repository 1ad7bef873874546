"""kill -9 the response consumer at random moments: every finding still gets exactly one link,
versions stay consecutive and distinct, and only the poisoned messages are dead-lettered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from qcdr_common.streams.names import dlq_key, stream_key
from qcdr_common.streams.producer import publish
from redis.asyncio import Redis

from tests.response.service.conftest import finding_envelope, make_finding

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration, pytest.mark.slow]

FINDINGS = "analysis:findings"
SCOPES = [
    ("Network_Scanning_Utility", ["T1046"], "nmap"),
    ("Container_Escape", ["T1611"], "nsenter"),
    ("Crypto_Mining", ["T1496"], "xmrig"),
]


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qcdr_response", "consume"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def test_kill_9_at_random_moments_links_every_finding_exactly_once(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    rng = random.Random(4)
    findings = [
        make_finding(category=c, techniques=t, process={"name": p}, namespace=f"ns-{rng.randrange(4)}")
        for c, t, p in (rng.choice(SCOPES) for _ in range(3000))
    ]
    envelopes = [finding_envelope(f) for f in findings]
    # analysis re-raising some findings under new envelope ids (its own redeliveries)
    envelopes += [finding_envelope(f) for f in rng.sample(findings, 100)]
    rng.shuffle(envelopes)
    poison = [
        finding_envelope(make_finding()).model_copy(update={"payload": {"id": f"poison-{i}"}})
        for i in range(2)
    ]
    await publish(
        redis_client,
        stream_key(redis_prefix, FINDINGS),
        envelopes[:1500] + poison + envelopes[1500:],
        maxlen=10**6,
    )

    env = {
        **os.environ,
        "DATABASE_URL": committed_db,
        "REDIS_URL": redis_url,
        "QCDR_REDIS_PREFIX": redis_prefix,
        "QCDR_CONSUMER_NAME": "response-crash-0",  # a restarted pod keeps its name
        "QCDR_STREAM_BATCH": "200",
        "QCDR_STREAM_CLAIM_IDLE_MS": "1000",
        # each kill re-delivers the batch in hand: room for the kills before "it crashes the consumer"
        "QCDR_STREAM_MAX_DELIVERIES": "10",
        "QCDR_CONSUME_METRICS_PORT": "0",
        "QCDR_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "consume.log"
    db = await asyncpg.connect(committed_db.replace("+asyncpg", ""))
    try:

        async def linked() -> int:
            return int(await db.fetchval("SELECT count(*) FROM response_finding_policy"))

        kills = 0
        proc = start(env, log)
        try:
            while kills < 4:
                # kill while it works: once this life has linked something, at a random moment
                before = await linked()
                for _ in range(3000):
                    if await linked() != before or proc.poll() is not None:
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0.0, 0.4))
                if await linked() >= len(findings):
                    break
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                kills += 1
                print(f"kill {kills}: {await linked()} findings linked")
                proc = start(env, log)
            deadline = asyncio.get_running_loop().time() + 120
            while (
                await linked() < len(findings) or await redis_client.xlen(dlq_key(redis_prefix, FINDINGS)) < 2
            ):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.2)
            groups = await redis_client.xinfo_groups(stream_key(redis_prefix, FINDINGS))
            while groups[0]["pending"] or groups[0]["lag"]:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
                groups = await redis_client.xinfo_groups(stream_key(redis_prefix, FINDINGS))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert kills >= 2, kills

        distinct = {f.id for f in findings}
        assert await db.fetchval("SELECT count(*) FROM response_findings") == len(distinct)
        assert await linked() == len(distinct)
        assert await db.fetchval("SELECT count(*) FROM response_received") == len(envelopes)
        # versions: 1..n per policy, each differing from the one before it
        assert (
            await db.fetchval(
                """SELECT count(*) FROM (
                     SELECT policy_id, count(*) AS n, max(version) AS top FROM response_policy_versions
                     GROUP BY policy_id) v WHERE n <> top"""
            )
            == 0
        )
        assert (
            await db.fetchval(
                """SELECT count(*) FROM response_policy_versions a JOIN response_policy_versions b
                   ON a.policy_id = b.policy_id AND b.version = a.version + 1
                   WHERE a.content_hash = b.content_hash"""
            )
            == 0
        )
        # each policy's current version covers every finding of its scope
        assert (
            await db.fetchval(
                """SELECT count(*) FROM response_policies p
                   JOIN response_policy_versions v ON v.policy_id = p.id AND v.version = p.current_version
                   WHERE p.name NOT LIKE '%-override' AND v.finding_count <> (
                     SELECT count(*) FROM response_findings f
                     WHERE f.family = p.family AND f.namespace = p.namespace)"""
            )
            == 0
        )
        # one policy_changed event per version, all published
        assert await db.fetchval(
            "SELECT count(*) FROM response_outbox WHERE type = 'response.policy_changed'"
        ) == await db.fetchval("SELECT count(*) FROM response_policy_versions")
        assert await db.fetchval("SELECT count(*) FROM response_outbox WHERE published_at IS NULL") == 0
        letters = await redis_client.xrange(dlq_key(redis_prefix, FINDINGS))
        assert sorted(fields[b"type"] for _, fields in letters) == [b"analysis.finding_raised"] * 2
        assert all(b"validation error" in fields[b"error"] for _, fields in letters)
    finally:
        await db.close()
