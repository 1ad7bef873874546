"""The action rules in one transaction each (rolled back): dry-run by default, protected targets,
rate limits, step order and cancellation, approvals, and the append-only audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome, ActionResult, ActionTarget
from qcdr_response.actions import execution, service
from qcdr_response.actions.audit import trail
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.models import ActionRow
from qcdr_response.db.models import outbox
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

pytestmark = [pytest.mark.db]

TARGET = ActionTarget(namespace="payments", pod="api-1", binary="/tmp/xmrig")


def step(**kw: Any) -> service.StepRequest:
    values: dict[str, Any] = {"action": "block_binary", "target": TARGET}
    values.update(kw)
    return service.StepRequest(**values)


async def run(
    session: AsyncSession, ctx: ActionsContext, *steps: service.StepRequest, run_id: str = "r1"
) -> list[ActionRow]:
    return await service.start_run(
        session, ctx, run_id=run_id, steps=list(steps), requested_by="tester", lenient=True
    )


def result(
    row: ActionRow, outcome: ActionOutcome, op: ActionOp = ActionOp.EXECUTE, **kw: Any
) -> ActionResult:
    return ActionResult(
        action_id=row.id,
        op=op,
        action=row.action,
        attempt=row.attempt,
        outcome=outcome,
        executor="test",
        finished_at=datetime.now(UTC),
        **kw,
    )


async def outbox_streams(session: AsyncSession) -> list[str]:
    rows = await session.scalars(select(outbox.c.stream).order_by(outbox.c.id))
    return list(rows)


async def test_dry_run_is_the_default_and_a_dry_run_cannot_be_undone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = ActionsContext(cluster_id="t")  # not enforcing
    async with sessions.begin() as session:
        [row] = await run(session, ctx, step(dry_run=False))
        assert row.dry_run is True
        assert row.state == "queued"
        assert await outbox_streams(session) == ["response:actions"]
        await execution.begin_execution(session, row.id, ActionOp.EXECUTE, 1, "test")
        await execution.record_result(
            session, ctx, result(row, ActionOutcome.DRY_RUN, details={"would": "apply"})
        )
        assert row.state == "dry_run"
        assert row.lease_expires_at is None
        with pytest.raises(service.ActionTransitionError, match="dry run"):
            await service.undo(session, ctx, row.id, "tester")
        with pytest.raises(service.ActionTransitionError, match="no running lease"):
            await service.renew(session, ctx, row.id, "tester")


async def test_protected_namespaces_and_workloads_are_never_queued(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = ActionsContext(
        cluster_id="t",
        enforce=True,
        protected_namespaces=("kube-system", "qualys-*"),
        protected_workloads=("payments/ledger-*",),
    )
    targets = [
        ActionTarget(namespace="kube-system", pod="coredns-1", binary="/bin/sh"),
        ActionTarget(namespace="qualys-system", pod="analysis-1", binary="/bin/sh"),
        ActionTarget(namespace="payments", pod="x-1", owner_name="ledger-writer", binary="/bin/sh"),
    ]
    async with sessions.begin() as session:
        for i, target in enumerate(targets):
            [row] = await run(session, ctx, step(target=target), run_id=f"p{i}")
            assert row.state == "skipped"
            assert "protected" in (row.message or "")
        assert await outbox_streams(session) == []


async def test_rate_limits_per_action_and_per_workload_but_not_for_dry_runs(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = ActionsContext(cluster_id="t", enforce=True, action_rate_per_hour=3, workload_rate_per_hour=2)
    async with sessions.begin() as session:
        states = []
        for i in range(3):
            [row] = await run(session, ctx, step(), run_id=f"w{i}")
            states.append((row.state, row.message))
        assert [s for s, _ in states] == ["queued", "queued", "skipped"]
        assert "rate limit: 2 actions on payments/api-1" in (states[2][1] or "")
        other = ActionTarget(namespace="shop", pod="web-1", binary="/tmp/x")
        [row] = await run(session, ctx, step(target=other), run_id="o1")
        assert row.state == "queued"
        [row] = await run(session, ctx, step(target=other.model_copy(update={"pod": "web-2"})), run_id="o2")
        assert row.state == "skipped"
        assert "3 block_binary actions" in (row.message or "")
        [row] = await run(session, ctx, step(dry_run=True), run_id="d1")
        assert row.state == "queued"
        assert row.dry_run


async def test_steps_wait_for_each_other_and_a_failure_cancels_the_rest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = ActionsContext(cluster_id="t", enforce=True)
    async with sessions.begin() as session:
        first, second, third = await run(session, ctx, step(), step(require_approval=True), step())
        assert [first.state, second.state, third.state] == ["queued", "waiting", "waiting"]
        await execution.begin_execution(session, first.id, ActionOp.EXECUTE, 1, "test")
        await execution.record_result(
            session, ctx, result(first, ActionOutcome.SUCCEEDED, undo={"name": "x"})
        )
        assert first.state == "succeeded"
        assert first.lease_expires_at is not None
        assert second.state == "pending"
        assert third.state == "waiting"
        await service.reject(session, ctx, second.id, "alice", "not now")
        assert second.state == "rejected"
        assert third.state == "cancelled"
        assert "step 2 (block_binary) ended rejected" in (third.message or "")
        with pytest.raises(service.ActionTransitionError):
            await service.approve(session, ctx, second.id, "bob")

        a, b = await run(session, ctx, step(target=ActionTarget(namespace="payments")), step(), run_id="r2")
        assert a.state == "skipped"
        assert "needs target field(s): binary" in (a.message or "")
        assert b.state == "cancelled"
        a, b = await run(
            session,
            ctx,
            step(target=ActionTarget(namespace="payments"), continue_on_error=True),
            step(),
            run_id="r3",
        )
        assert a.state == "skipped"
        assert b.state == "queued"


async def test_results_are_recorded_once_and_stale_attempts_ignored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = ActionsContext(cluster_id="t", enforce=True)
    async with sessions.begin() as session:
        [row] = await run(session, ctx, step())
        assert await execution.begin_execution(session, row.id, ActionOp.EXECUTE, 1, "t") == "run"
        assert await execution.begin_execution(session, row.id, ActionOp.EXECUTE, 1, "t") == "recover"
        ok = result(row, ActionOutcome.SUCCEEDED, undo={"name": "qcdr-block-1", "namespace": "payments"})
        assert await execution.record_result(session, ctx, ok) is not None
        assert await execution.record_result(session, ctx, ok) is None  # the same result again
        assert await execution.begin_execution(session, row.id, ActionOp.EXECUTE, 1, "t") == "duplicate"
        await service.undo(session, ctx, row.id, "alice")
        assert row.state == "releasing"
        assert row.attempt == 2
        assert await execution.record_result(session, ctx, ok) is None  # attempt 1's result: stale
        undone = result(row, ActionOutcome.FAILED, op=ActionOp.UNDO, message="apiserver down")
        await execution.record_result(session, ctx, undone)
        assert row.state == "undo_failed"
        assert row.lease_expires_at is not None
        await service.undo(session, ctx, row.id, "alice")  # may be tried again
        await execution.record_result(session, ctx, result(row, ActionOutcome.SUCCEEDED, op=ActionOp.UNDO))
        assert row.state == "released"
        assert row.released_at is not None
        events = [a.event for a in await trail(session, row.id)]
        assert events == [
            "requested",
            "queued",
            "intent",
            "result",
            "undo_requested",
            "undo_result",
            "undo_requested",
            "undo_result",
        ]


async def test_the_audit_trail_is_append_only(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = ActionsContext(cluster_id="t")
    async with sessions.begin() as session:
        await run(session, ctx, step())
    for sql in ("UPDATE response_action_audit SET actor = 'mallory'", "DELETE FROM response_action_audit"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with sessions.begin() as session:
                await session.execute(text(sql))


async def test_leases_end_by_themselves(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = ActionsContext(cluster_id="t", enforce=True)
    async with sessions.begin() as session:
        [row] = await run(session, ctx, step(lease_seconds=60))
        await execution.begin_execution(session, row.id, ActionOp.EXECUTE, 1, "t")
        await execution.record_result(session, ctx, result(row, ActionOutcome.SUCCEEDED, undo={"name": "x"}))
        assert row.lease_expires_at is not None
        assert await service.expire_leases(session, ctx, datetime.now(UTC)) == []
        later = row.lease_expires_at.replace(microsecond=0) + (row.lease_expires_at - row.lease_expires_at)
        assert await service.expire_leases(session, ctx, later.replace(year=later.year + 1)) == [row.id]
        assert row.state == "releasing"
        assert (await outbox_streams(session))[-1] == "response:actions"


async def contained(
    session: AsyncSession, ctx: ActionsContext, run_id: str, pod: str, outcome: ActionOutcome, **kw: Any
) -> ActionRow:
    target = ActionTarget(namespace="payments", pod=pod, binary="/tmp/xmrig")
    [row] = await run(session, ctx, step(target=target, lease_seconds=60), run_id=run_id)
    await execution.begin_execution(session, row.id, ActionOp.EXECUTE, 1, "t")
    await execution.record_result(session, ctx, result(row, outcome, **kw))
    assert row.state == "succeeded"
    return row


async def test_a_containment_without_an_undo_record_gets_no_lease(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A recovery that could not rebuild the undo record (``rebuild_undo`` gives None): the effect
    stands, but a lease nothing could release would only come back as a failure at expiry."""
    ctx = ActionsContext(cluster_id="t", enforce=True)
    async with sessions.begin() as session:
        row = await contained(session, ctx, "r-no-undo", "api-1", ActionOutcome.RECOVERED)
        assert row.lease_expires_at is None
        assert "no undo record, so no lease" in (row.message or "")
        [result_event] = [a for a in await trail(session, row.id) if a.event == "result"]
        assert "no undo record" in result_event.detail["no_lease"]
        assert await service.expire_leases(session, ctx, datetime.now(UTC) + timedelta(days=30)) == []
        with pytest.raises(service.ActionTransitionError, match="no running lease"):
            await service.renew(session, ctx, row.id, "tester")


async def test_a_lease_that_cannot_be_undone_does_not_hold_up_the_others(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A leased row that ``undo`` refuses (here: no undo record, as earlier versions leased after
    a recovery) used to roll the whole expiry round back, and stayed first in line every round:
    no lease was ever released again. Now it goes undo_failed with the reason."""
    ctx = ActionsContext(cluster_id="t", enforce=True)
    async with sessions.begin() as session:
        stuck = await contained(session, ctx, "r-stuck", "api-1", ActionOutcome.SUCCEEDED, undo={"name": "x"})
        ok = await contained(session, ctx, "r-ok", "api-2", ActionOutcome.SUCCEEDED, undo={"name": "y"})
        stuck.undo = None  # what an earlier version stored, with a lease
        stuck.lease_expires_at = (ok.lease_expires_at or datetime.now(UTC)) - timedelta(seconds=1)
        await session.flush()
        later = datetime.now(UTC) + timedelta(hours=2)
        assert await service.expire_leases(session, ctx, later) == [ok.id]
        assert ok.state == "releasing"
        assert stuck.state == "undo_failed"
        assert "the lease ended, but it cannot be undone: action" in (stuck.message or "")
        assert "recorded nothing to undo" in (stuck.message or "")
        refused = [a for a in await trail(session, stuck.id) if a.event == "refused"]
        assert [(a.actor, a.detail["op"]) for a in refused] == [("lease-expiry", "undo")]
        assert await service.expire_leases(session, ctx, later) == []  # not picked again
