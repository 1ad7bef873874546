"""A receiver's error body that names the webhook path it was called on reaches neither the dead
letters (PostgreSQL) nor the dead-letter log line."""

from __future__ import annotations

import pytest
from qcdr_common.logging import _redact
from qcdr_common.testing.logs import capture_logs
from redis.asyncio import Redis

from tests.cli.test_outputs_secrets import SECRET, SLACK_PATH, echo_404_server
from tests.response.outputs.test_delivery import eventually, fetch, publish_findings, worker
from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]


async def test_dead_letter_row_and_log_do_not_hold_the_webhook_path(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    with echo_404_server() as base:
        settings = response_settings(
            database_url=committed_db, redis_url=redis_url, redis_prefix=redis_prefix
        )
        sinks = [
            {
                "type": "slack",
                "name": "chat",
                "webhook_url": base + SLACK_PATH,
                "rate_per_s": None,
                "group_by": ["finding"],
                "timeout_s": 1,
            }
        ]
        with capture_logs(processors=[_redact]) as logs:
            async with worker(settings, redis_client, sinks):
                await publish_findings(redis_client, redis_prefix, 1, severity="critical")

                async def dead() -> bool:
                    rows = await fetch(committed_db, "SELECT count(*) AS n FROM response_output_dead_letters")
                    return rows[0]["n"] >= 1

                await eventually(dead, 20)
    rows = await fetch(committed_db, "SELECT reason, last_error FROM response_output_dead_letters")
    logged = [e for e in logs if e.get("event") == "output dead-lettered"]
    assert logged
    leaks = [f"log: {e['detail']}" for e in logged if SECRET in str(e)]
    leaks += [f"dead letter row: {r['last_error']}" for r in rows if SECRET in (r["last_error"] or "")]
    assert leaks == [], leaks
