"""A playbook's cooldown: a burst of findings about one workload starts one run, other workloads
still get theirs, and the next run starts once the cooldown has passed. Its max_age: a finding
about something long past (a backfill) starts none."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.wait import until_a_session_waits_for_a_lock
from qcdr_response.actions import planner
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow
from qcdr_response.actions.playbook import Playbook, load_playbooks
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import make_finding

pytestmark = [pytest.mark.db]


def playbook(**overrides: Any) -> Playbook:
    data: dict[str, Any] = {
        "name": "label-shells",
        "match": {"categories": ["Network_Scanning_Utility"]},
        "actions": [{"action": "label_pod", "params": {"labels": {"qcdr.qualys.com/suspect": "true"}}}],
    }
    return Playbook.model_validate(data | overrides)


def finding(pod: str, owner: str | None = "api") -> Finding:
    base = make_finding()
    workload: dict[str, Any] = {"namespace": "payments", "pod": pod, "container": "api"}
    if owner:
        workload |= {"owner_kind": "Deployment", "owner_name": owner}
    return base.model_copy(update={"workload": base.workload.model_copy(update=workload)})


async def runs(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(ActionRow).where(ActionRow.step == 1)) or 0
    )


async def test_one_run_per_workload_within_the_cooldown(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = ActionsContext(cluster_id="t")
    cooled = playbook(cooldown="10m")
    assert cooled.cooldown == 600
    async with sessions.begin() as session:
        # a burst: five findings about two replicas of one Deployment, one about another workload
        burst = [finding(f"api-7d9f-{i}") for i in range(5)] + [finding("web-1", owner="web")]
        await planner.plan(session, ctx, burst, [cooled])
        assert await runs(session) == 2
        before = planner.SUPPRESSED.labels("label-shells")._value.get()

        # a later batch about the same Deployment: still cooling down
        await planner.plan(session, ctx, [finding("api-7d9f-9")], [cooled])
        assert await runs(session) == 2
        assert planner.SUPPRESSED.labels("label-shells")._value.get() == before + 1

        # a bare pod is its own workload; the cooldown passes and the next finding starts a run
        await planner.plan(session, ctx, [finding("debug", owner=None)], [cooled])
        assert await runs(session) == 3
        await session.execute(
            text("UPDATE response_actions SET created_at = created_at - interval '11 minutes'")
        )
        await planner.plan(session, ctx, [finding("api-7d9f-0")], [cooled])
        assert await runs(session) == 4

        # without a cooldown every finding starts its own run, as before
        await planner.plan(
            session, ctx, [finding("api-7d9f-0"), finding("api-7d9f-1")], [playbook(name="each")]
        )
        assert await runs(session) == 6


async def test_replicas_planning_at_once_start_one_run(committed_db: str) -> None:
    """Two replicas' batches about one Deployment, the second checking before the first commits
    (real connections: the ``sessions`` fixture shares one, which would serialize them anyway)."""
    ctx = ActionsContext(cluster_id="t")
    name = f"race-{uuid.uuid4().hex[:8]}"
    cooled = playbook(name=name, cooldown="10m")
    engine = make_engine(committed_db, pool_size=2)
    sessions = make_session_factory(engine)
    planned = asyncio.Event()

    async def first_replica() -> None:
        async with sessions.begin() as session:
            await planner.plan(session, ctx, [finding("api-7d9f-1")], [cooled])
            planned.set()
            # commits once the second waits for it (a time would not say that it does by then)
            await until_a_session_waits_for_a_lock(committed_db)

    try:
        first = asyncio.create_task(first_replica())
        await planned.wait()
        async with sessions.begin() as session:
            await planner.plan(session, ctx, [finding("api-7d9f-2")], [cooled])
        await first
        async with sessions() as session:
            started = await session.scalar(
                select(func.count()).select_from(ActionRow).where(ActionRow.playbook == name)
            )
        assert started == 1
    finally:
        await engine.dispose()


def test_cooldown_must_be_a_duration() -> None:
    with pytest.raises(ValueError, match="duration"):
        playbook(cooldown="soon")
    assert playbook(cooldown=90).cooldown == 90
    assert playbook().cooldown is None


async def test_a_finding_older_than_max_age_starts_no_run(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = ActionsContext(cluster_id="t")
    limited = playbook(name="recent-only", max_age="1h")
    assert limited.max_age == 3600
    now = datetime.now(UTC)
    fresh = finding("api-1").model_copy(update={"event_time": now - timedelta(minutes=50)})
    backfilled = finding("api-2").model_copy(update={"id": "old", "event_time": now - timedelta(hours=30)})
    before = planner.TOO_OLD.labels("recent-only")._value.get()
    async with sessions.begin() as session:
        await planner.plan(session, ctx, [backfilled], [limited])
        assert await runs(session) == 0
        assert planner.TOO_OLD.labels("recent-only")._value.get() == before + 1
        await planner.plan(session, ctx, [fresh], [limited])
        assert await runs(session) == 1
        # without max_age (a playbook of yours that does not say), age does not matter
        await planner.plan(session, ctx, [backfilled], [playbook(name="any-age")])
        assert await runs(session) == 2


def test_the_shipped_playbooks_act_on_recent_findings_only() -> None:
    shipped = load_playbooks(None)
    assert shipped
    assert all(pb.max_age == 3600 for pb in shipped)
