"""``GET /v1/actions/stats``: actions requested in a window and how long after the finding's event
they were requested and finished (the console's detection → action figure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.response.actions.service_helpers import POD, running_service

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]


async def _finding(database_url: str, finding_id: str, event_time: datetime) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO response_findings (id, kind, category, severity, event_time, family,"
                    " namespace, envelope_id, payload) VALUES (:id, 'source', 'Reverse shell', 'high',"
                    " :t, NULL, 'payments', :env, '{}'::jsonb)"
                ),
                {"id": finding_id, "t": event_time, "env": f"env-{finding_id}"},
            )
    finally:
        await engine.dispose()


async def test_detection_to_action_in_a_window(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    happened = datetime.now(UTC) - timedelta(seconds=90)
    await _finding(committed_db, "f-stats-1", happened)
    async with running_service(committed_db, redis_url, redis_prefix, tmp_path) as service:
        empty = (await service.get("/v1/actions/stats")).json()
        assert (empty["actions"], empty["requested_p50_s"]) == (0, None)
        target = {"namespace": "payments", "pod": POD["metadata"]["name"]}
        for finding_id in ("f-stats-1", None):
            body = {"action": "isolate_pod", "target": target, "finding_id": finding_id}
            created = await service.post("/v1/actions", body)
            assert created.status_code == 201, created.text
            await service.until_state(created.json()["id"], "dry_run")
        stats = (await service.get("/v1/actions/stats")).json()
        assert (stats["actions"], stats["from_findings"], stats["pending"]) == (2, 1, 0)
        assert 85 <= stats["requested_p50_s"] <= 150
        assert stats["finished_p50_s"] >= stats["requested_p50_s"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await service.get("/v1/actions/stats", since=later)).status_code == 422
        window = await service.get("/v1/actions/stats", since=later, until=later.replace("+00:00", "Z"))
        assert window.status_code == 422
        # the ends of the calendar overflowed (until - 24 h, or on the way to UTC): an HTTP 500
        for edge in (
            {"until": "0001-01-01T00:00:00Z"},
            {"since": "0001-01-01T00:00:00+01:00"},
            {"since": later, "until": "9999-12-31T23:59:59-01:00"},
        ):
            r = await service.get("/v1/actions/stats", **edge)
            assert (r.status_code, r.json()["reason"]) == (422, "invalid_time_range"), (edge, r.text)
