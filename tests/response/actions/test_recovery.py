"""A crash between the executor's intent record and its result, through the real stream
redelivery: the action is re-checked and recorded once as "done (recovered)", run when its effect
is absent, or "skipped: target gone" when the pod went away meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod
from qcdr_common.contracts.actions.v1 import ActionOp, ActionRequest, ActionTarget
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams.outbox import OutboxRelay
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.actions import service
from qcdr_response.actions.audit import trail
from qcdr_response.actions.base import Scope
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.dispatch import request_of
from qcdr_response.actions.models import ActionRow
from qcdr_response.actions.policy._context import PolicyContext
from qcdr_response.actions.registry import load_actions
from qcdr_response.actions.runtime import ActionsRuntime
from qcdr_response.db.models import outbox
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import GenerationConfig
from redis.asyncio import Redis

from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "api-1", "namespace": "payments", "labels": {"app": "api"}},
    "spec": {"containers": [{"name": "api", "image": "registry.example/api:1"}]},
}


class CrashOnce:
    """The executor's context factory: the first time, run ``before_crash`` (act for real, or
    delete the pod) and then 'crash' by raising out of the handler, so the request stays
    unacknowledged with its intent recorded; afterwards, the real context."""

    def __init__(self, k8s: K8sTestServer, before_crash: Callable[[PolicyContext], Awaitable[None]]) -> None:
        self.client = k8s.async_client()
        self.before_crash = before_crash
        self.calls = 0

    async def __call__(self, scope: Scope) -> Any:
        self.calls += 1
        ctx = PolicyContext(client=self.client, checker=default_checker(GenerationConfig()))
        if self.calls == 1:
            await self.before_crash(ctx)
            raise RuntimeError("simulated crash between intent and result")
        return ctx


@contextlib.asynccontextmanager
async def runtime(
    db: str, redis: Redis, redis_url: str, prefix: str, contexts: Any
) -> AsyncIterator[ActionsRuntime]:
    settings = response_settings(
        database_url=db, redis_url=redis_url, redis_prefix=prefix, stream_claim_idle_ms=100, lease_poll_s=0.1
    )
    engine = make_engine(db)
    sessions = make_session_factory(engine)
    relay = OutboxRelay.from_settings(engine, redis, outbox, settings)
    ctx = ActionsContext(cluster_id="test", enforce=True)
    rt = ActionsRuntime(
        settings, sessions, redis, ctx, cluster=None, wake_relay=relay.notify, contexts=contexts
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(f(stop)) for f in (relay.run, rt.requests.run, rt.results.run)]
    try:
        yield rt
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await engine.dispose()


async def until(rt: ActionsRuntime, action_id: int, states: set[str], within_s: float = 15) -> ActionRow:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        async with rt.sessions() as session:
            row = await session.get_one(ActionRow, action_id)
            if row.state in states:
                return row
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"action {action_id} stayed {row.state}")
        await asyncio.sleep(0.05)


async def request(rt: ActionsRuntime, binary: str) -> int:
    async with rt.sessions.begin() as session:
        [row] = await service.start_run(
            session,
            rt.ctx,
            run_id=f"test:{binary}",
            steps=[
                service.StepRequest(
                    "block_binary", ActionTarget(namespace="payments", pod="api-1", binary=binary)
                )
            ],
            requested_by="test",
        )
    rt.wake_relay()
    return row.id


async def current_request(rt: ActionsRuntime, action_id: int) -> ActionRequest:
    async with rt.sessions() as session:
        return request_of(await session.get_one(ActionRow, action_id), ActionOp.EXECUTE)


@pytest.mark.parametrize(
    ("case", "expected_state", "message"),
    [
        ("effect-in-place", "succeeded", "done (recovered)"),
        ("effect-absent", "succeeded", "applied TracingPolicyNamespaced"),
        ("pod-gone", "skipped", "skipped: target gone"),
    ],
)
async def test_a_crash_between_intent_and_result_is_recovered_once(
    case: str,
    expected_state: str,
    message: str,
    committed_db: str,
    redis_client: Redis,
    redis_url: str,
    redis_prefix: str,
) -> None:
    k8s = K8sTestServer()
    ids: list[int] = []

    async def before_crash(ctx: PolicyContext) -> None:
        if case == "effect-in-place":
            await load_actions().get("block_binary").execute(ctx, await current_request(rt, ids[0]))
        elif case == "pod-gone":
            await ctx.client.delete(Pod, "api-1", namespace="payments")

    with k8s.serve():
        k8s.seed(POD)
        crash = CrashOnce(k8s, before_crash)
        async with runtime(committed_db, redis_client, redis_url, redis_prefix, crash) as rt:
            ids.append(await request(rt, "/tmp/xmrig"))
            row = await until(rt, ids[0], {"succeeded", "skipped", "failed"})
            async with rt.sessions() as session:
                events = [a.event for a in await trail(session, ids[0])]
        await crash.client.close()
        policies = k8s.objects("TracingPolicyNamespaced")
    assert crash.calls >= 2
    assert row.state == expected_state, row.message
    assert (row.message or "").startswith(message), row.message
    assert events == ["requested", "queued", "intent", "result"]  # one intent, one result
    assert len(policies) == (0 if case == "pod-gone" else 1)
    if case != "pod-gone":
        # recovered or not, the record undo and the lease's release need is there
        (name,) = [n for _, n in policies]
        assert row.undo == {"namespace": "payments", "name": name}
