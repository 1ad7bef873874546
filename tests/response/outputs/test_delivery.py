"""Durable delivery with the real PostgreSQL and Redis and a local webhook receiver that counts
delivery ids: a sink that fails for a while receives every message (duplicates only after an
unknown outcome, with the same id); a sink that stays down fills the dead letters while another
keeps flowing; kill -9 of the response consumer mid-delivery loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from qcdr_common.testing.sinks.webhook import WebhookServer
from qcdr_common.testing.wait import eventually_async
from qcdr_response.outputs.config import parse_entries
from qcdr_response.outputs.runtime import OutputsRuntime
from qcdr_response.settings import ResponseSettings
from qcdr_response.worker import ResponseWorker
from redis.asyncio import Redis

from tests.response.service.conftest import finding_envelope, make_finding, response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.3, "group_by": ["finding"], "timeout_s": 0.5}


async def fetch(db: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 30.0) -> None:
    await eventually_async(check, within_s, what="delivery")


@contextlib.asynccontextmanager
async def worker(
    settings: ResponseSettings, redis: Redis, outputs: list[dict[str, Any]]
) -> AsyncIterator[None]:
    engine = make_engine(settings.database_url.get_secret_value())
    runtime = OutputsRuntime(settings, make_session_factory(engine), parse_entries(outputs, {}))
    w = ResponseWorker(settings, engine, redis, outputs=runtime)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await engine.dispose()


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "name": name, "url": url, **FAST, **extra}


async def publish_findings(redis: Redis, prefix: str, n: int, **kw: Any) -> list[str]:
    findings = [make_finding(**kw) for _ in range(n)]
    await publish(
        redis, stream_key(prefix, "analysis:findings"), [finding_envelope(f) for f in findings], maxlen=10**5
    )
    return [f.id for f in findings]


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qcdr_response", "consume"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def ids_of(server: WebhookServer) -> Counter[str]:
    return Counter(r.body["delivery_id"] for r in server.received)  # type: ignore[index]


async def test_a_flaky_sink_receives_everything_and_duplicates_only_after_unknown_outcomes(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    flaky, steady = WebhookServer(), WebhookServer()
    with flaky.serve(), steady.serve():
        flaky.fail_next(4, status=500)
        flaky.fail_next(3, status=429, retry_after=1)
        flaky.hang_next(2, seconds=1.0)  # read, processed, answered after the client's 0.5 s timeout
        flaky.fail_next(2, status=503)
        settings = response_settings(
            database_url=committed_db, redis_url=redis_url, redis_prefix=redis_prefix
        )
        sinks = [webhook("flaky", flaky.url), webhook("steady", steady.url)]
        async with worker(settings, redis_client, sinks):
            findings = await publish_findings(redis_client, redis_prefix, 30)

            async def all_delivered() -> bool:
                rows = await fetch(committed_db, "SELECT state FROM response_output_queue")
                return len(rows) == 60 and all(r["state"] == "delivered" for r in rows)

            await eventually(all_delivered, 60)
        queued = {
            r["message_id"]
            for r in await fetch(
                committed_db, "SELECT message_id FROM response_output_queue WHERE sink = 'flaky'"
            )
        }
        got = ids_of(flaky)
        assert set(got) == queued == flaky.unique_keys  # every message, under its own id
        assert {r.body["finding"]["id"] for r in flaky.received} == set(findings)  # type: ignore[index]
        duplicates = sum(n - 1 for n in got.values())
        assert duplicates <= 2  # only the two answered after the timeout (unknown outcome)
        assert len(steady.received) == 30
        assert await fetch(committed_db, "SELECT * FROM response_output_dead_letters") == []
        retried = await fetch(
            committed_db, "SELECT count(*) AS n FROM response_output_queue WHERE attempts > 1"
        )
        assert retried[0]["n"] >= 5


async def test_a_sink_down_past_max_age_fills_the_dead_letters_while_others_flow(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    steady = WebhookServer()
    with steady.serve():
        settings = response_settings(
            database_url=committed_db, redis_url=redis_url, redis_prefix=redis_prefix
        )
        sinks = [
            webhook("down", "http://127.0.0.1:9/hooks", max_age_s=1.5),  # nothing listens on port 9
            webhook("steady", steady.url),
        ]
        async with worker(settings, redis_client, sinks):
            await publish_findings(redis_client, redis_prefix, 20)

            async def steady_done() -> bool:
                return len(steady.unique_keys) == 20

            await eventually(steady_done, 10)

            async def down_dead() -> bool:
                rows = await fetch(committed_db, "SELECT count(*) AS n FROM response_output_dead_letters")
                return rows[0]["n"] == 20

            await eventually(down_dead, 20)
        dead = await fetch(
            committed_db, "SELECT sink, reason, last_error, attempts FROM response_output_dead_letters"
        )
        assert {r["sink"] for r in dead} == {"down"}
        assert all("max age" in r["reason"] for r in dead)
        # nothing listens on port 9: refused, or on a busy machine not answered within the timeout
        assert all(("ConnectError" in (e := r["last_error"] or "")) or "ConnectTimeout" in e for r in dead)
        left = await fetch(
            committed_db, "SELECT count(*) AS n FROM response_output_queue WHERE sink = 'down'"
        )
        assert left[0]["n"] == 0


@pytest.mark.slow
async def test_kill_9_mid_delivery_loses_nothing(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    server = WebhookServer()
    with server.serve():
        server.hang_next(400, seconds=0.05)  # slow enough that a kill lands mid-request
        config = tmp_path / "outputs.yaml"
        config.write_text(
            yaml.safe_dump({"outputs": [webhook("hook", server.url, timeout_s=1.0, concurrency=4)]})
        )
        env = {
            **os.environ,
            "QCDR_DATABASE_URL": committed_db,
            "QCDR_REDIS_URL": redis_url,
            "QCDR_REDIS_PREFIX": redis_prefix,
            "QCDR_OUTPUTS_FILE": str(config),
            "QCDR_STREAM_BLOCK_MS": "50",
            "QCDR_STREAM_CLAIM_IDLE_MS": "500",
            "QCDR_OUTPUTS_POLL_S": "0.05",
            "QCDR_ACTIONS_ENABLED": "false",
        }
        ids = await publish_findings(redis_client, redis_prefix, 150)
        log = tmp_path / "consumer.log"
        kills = 0
        for _ in range(3):
            proc = start(env, log)
            before = len(server.attempts)

            async def busy(before: int = before) -> bool:
                return len(server.attempts) >= before + 20

            await eventually(busy, 30)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        proc = start(env, log)
        try:

            async def done() -> bool:
                rows = await fetch(committed_db, "SELECT state FROM response_output_queue")
                return len(rows) == 150 and all(r["state"] == "delivered" for r in rows)

            await eventually(done, 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        assert kills == 3
        got = ids_of(server)
        assert {r.body["finding"]["id"] for r in server.received} == set(ids)  # type: ignore[index]
        assert len(server.unique_keys) == 150
        assert all(n <= 1 + kills for n in got.values())
