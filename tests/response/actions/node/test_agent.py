"""The node agent end to end through real Redis and a real dockerd: a request on the node's
stream becomes an action and a result on response:action-results; the intent key makes a
redelivery after a crash recover (effect in place), skip (target gone) or act (effect absent)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from qcdr_common.contracts.actions.v1 import (
    ACTION_COMPLETED,
    ACTION_REQUESTED,
    ActionOp,
    ActionOutcome,
    ActionRequest,
    ActionResult,
)
from qcdr_common.registry import Registry
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.names import stream_key
from qcdr_response.actions.base import Action, Done, Scope
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._context import NodeContext
from qcdr_response.node_agent import streams
from qcdr_response.node_agent.agent import GONE_MESSAGE, RECOVERED_MESSAGE, NodeAgent
from qcdr_response.node_agent.settings import NodeAgentSettings
from qcdr_response.node_agent.worker import run
from redis.asyncio import Redis

from tests.response.actions.node.conftest import (
    NODE,
    RunPod,
    host_pid,
    make_request,
    node_actions,
    status,
    wait_for,
)

pytestmark = pytest.mark.redis
PROC = Path("/proc")


def envelope_for(request: ActionRequest | dict[str, Any]) -> Envelope:
    return new_envelope(
        ACTION_REQUESTED, request, source="response", cluster_id="test", occurred_at=datetime.now(UTC)
    )


async def results(redis: Redis, prefix: str) -> list[Envelope]:
    entries = await redis.xrange(stream_key(prefix, streams.ACTION_RESULTS))
    return [Envelope.from_fields(fields) for _, fields in entries]


def intent_key(prefix: str, request: ActionRequest) -> str:
    name = streams.intent_name(NODE, request.action_id, request.op.value, request.attempt)
    return stream_key(prefix, name)


@pytest.fixture
def redis(redis_client: object) -> Redis:
    return cast(Redis, redis_client)


def alive(pid: int) -> bool:
    try:
        return _procfs.read_stat(PROC, pid).state not in ("Z", "X")
    except ProcessLookupError:
        return False


@pytest.fixture
def agent(redis: Redis, redis_prefix: str, node_ctx: NodeContext) -> NodeAgent:
    return NodeAgent(redis, node_ctx, prefix=redis_prefix, cluster_id="test", actions=node_actions())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_request_in_result_out(
    redis: Redis, redis_url: str, redis_prefix: str, node_ctx: NodeContext, run_pod: RunPod
) -> None:
    container = run_pod()
    port = free_port()
    settings = NodeAgentSettings(
        node_name=NODE,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        http_host="127.0.0.1",
        http_port=port,
        stream_block_ms=50,
        consumer_name="agent-test",
    )
    request = make_request("pause_container", container)
    sent = envelope_for(request)
    requests_key = stream_key(redis_prefix, streams.node_actions_stream(NODE))
    await redis.xadd(requests_key, sent.to_fields())  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, ctx=node_ctx, stop=stop, signals=False))
    try:
        for _ in range(200):
            if got := await results(redis, redis_prefix):
                break
            await asyncio.sleep(0.05)
        (envelope,) = got
        assert envelope.type == ACTION_COMPLETED
        assert (envelope.causation_id, envelope.correlation_id) == (sent.id, sent.correlation_id)
        result = envelope.payload_as(ActionResult)
        assert (result.action_id, result.op, result.outcome) == (
            request.action_id,
            ActionOp.EXECUTE,
            "succeeded",
        )
        assert result.executor == NODE
        assert result.undo == {"container_id": container.id}
        assert status(container) == "paused"
        stored = orjson.loads(await redis.get(intent_key(redis_prefix, request)))
        assert stored["state"] == "done"
        assert stored["envelope"]["id"] == envelope.id
        assert await redis.ttl(intent_key(redis_prefix, request)) > 6 * 24 * 3600

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):  # acknowledged after the result was published
                if (await redis.xpending(requests_key, streams.GROUP))["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await redis.xpending(requests_key, streams.GROUP))["pending"] == 0
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"redis": "ok", "docker": "ok"}
            metrics = (await http.get("/metrics")).text
            assert 'qcdr_node_agent_actions_total{action="pause_container",outcome="succeeded"}' in metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_recovery_effect_in_place(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    container = run_pod()
    request = make_request("pause_container", container)
    # the agent recorded the intent and paused the container, then died before the result
    await redis.set(intent_key(redis_prefix, request), orjson.dumps({"state": "intent"}))
    container.pause()
    result = await agent.handle(envelope_for(request))
    assert result is not None
    assert (result.outcome, result.message) == (ActionOutcome.RECOVERED, RECOVERED_MESSAGE)
    assert [e.payload["outcome"] for e in await results(redis, redis_prefix)] == ["recovered"]
    assert orjson.loads(await redis.get(intent_key(redis_prefix, request)))["state"] == "done"


async def test_recovery_of_a_kill(agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod) -> None:
    container = run_pod("sleep 1001 & sleep 1002 & wait")
    pid = host_pid(container, ["sleep", "1001"])
    ticks = _procfs.read_stat(PROC, pid).start_ticks
    request = make_request("kill_process", container, pid=pid, pid_start_ticks=ticks)
    await redis.set(intent_key(redis_prefix, request), orjson.dumps({"state": "intent"}))
    os.kill(pid, signal.SIGKILL)  # the agent's signal, just before it died
    wait_for(lambda: not alive(pid), "the kill")
    result = await agent.handle(envelope_for(request))
    assert result is not None
    assert (result.outcome, result.message) == (ActionOutcome.RECOVERED, RECOVERED_MESSAGE)


async def test_recovery_target_gone(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    container = run_pod()
    request = make_request("pause_container", container)
    await redis.set(intent_key(redis_prefix, request), orjson.dumps({"state": "intent"}))
    container.remove(force=True)
    result = await agent.handle(envelope_for(request))
    assert result is not None
    assert (result.outcome, result.message) == (ActionOutcome.SKIPPED, GONE_MESSAGE)
    assert "does not exist" in result.details["reason"]


async def test_recovery_effect_absent_acts(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    container = run_pod()
    request = make_request("pause_container", container)
    await redis.set(intent_key(redis_prefix, request), orjson.dumps({"state": "intent"}))
    result = await agent.handle(envelope_for(request))
    assert result is not None
    assert result.outcome is ActionOutcome.SUCCEEDED
    assert status(container) == "paused"


async def test_a_finished_request_is_answered_again_not_redone(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    container = run_pod()
    request = make_request("pause_container", container)
    first = await agent.handle(envelope_for(request))
    assert first is not None
    assert first.outcome is ActionOutcome.SUCCEEDED
    container.unpause()  # e.g. the lease ran out and the undo ran
    again = await agent.handle(envelope_for(request))
    assert again == first
    assert status(container) == "running"
    published = await results(redis, redis_prefix)
    assert len(published) == 2
    assert published[0].id == published[1].id  # one result, published twice: consumers drop the copy


async def test_dry_run_changes_nothing_even_in_recovery(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    container = run_pod()
    request = make_request("stop_container", container, dry_run=True)
    await redis.set(intent_key(redis_prefix, request), orjson.dumps({"state": "intent"}))
    result = await agent.handle(envelope_for(request))
    assert result is not None
    assert result.outcome is ActionOutcome.DRY_RUN
    assert status(container) == "running"


async def test_quarantine_through_a_link_to_a_name_that_is_not_utf8_is_published(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    """The file was removed, then the result could not be serialised: handle raised after the
    effect, the redelivery the same, and the request was dead-lettered with no result and no undo
    record. Now the result is published, its undo able to restore the exact name."""
    odd = "\"/tmp/$(printf '\\377')\""  # the byte 0xff
    script = f"printf x > {odd} && ln -s {odd} /tmp/link && touch /tmp/ready && exec sleep 600"
    container = run_pod(script, ready="/tmp/ready")
    result = await agent.handle(envelope_for(make_request("quarantine_file", container, path="/tmp/link")))
    assert result is not None
    assert result.outcome is ActionOutcome.SUCCEEDED, result.message
    (published,) = await results(redis, redis_prefix)
    assert published.payload_as(ActionResult) == result
    assert result.undo is not None
    assert result.undo["path_hex"] == b"/tmp/\xff".hex()


class _OddText(Action[Any]):
    name = "odd_text"
    scope = Scope.NODE
    description = "reports text with a surrogate escape, as os.fsdecode gives for a non-UTF-8 name"

    async def execute(self, ctx: Any, request: ActionRequest) -> Done:
        name = os.fsdecode(b"/tmp/\xff")
        return Done(ActionOutcome.SUCCEEDED, f"did {name}", {"path": name, name: [name]}, {"path": name})


async def test_a_result_with_text_that_is_not_utf8_is_still_published(
    agent: NodeAgent, redis: Redis, redis_prefix: str
) -> None:
    """Whatever an action reports after its effect, the result is stored and published (the text
    made JSON-safe), never an exception after the side effect."""
    agent.actions = Registry("action")
    agent.actions.add(_OddText.name, _OddText())
    result = await agent.handle(envelope_for(make_request("odd_text", None)))
    assert result is not None
    assert result.outcome is ActionOutcome.SUCCEEDED
    shown = r"/tmp/\xff"
    assert (result.message, result.details, result.undo) == (
        f"did {shown}",
        {"path": shown, shown: [shown]},
        {"path": shown},
    )
    (published,) = await results(redis, redis_prefix)
    assert published.payload_as(ActionResult) == result


class _ClusterThing(Action[Any]):
    name = "cluster_thing"
    scope = Scope.CLUSTER
    description = "a cluster action the node agent must refuse"

    async def execute(self, ctx: Any, request: ActionRequest) -> Done:
        raise AssertionError("never run")


async def test_bad_requests_become_failed_results(
    agent: NodeAgent, redis: Redis, redis_prefix: str, run_pod: RunPod
) -> None:
    actions = node_actions()
    registry: Registry[Action[Any]] = Registry("action")
    for name, action in [*actions.items(), ("cluster_thing", _ClusterThing())]:
        registry.add(name, action)
    agent.actions = registry
    container = run_pod()
    system = run_pod(namespace="kube-system")
    cases: list[tuple[ActionRequest | dict[str, Any], ActionOutcome, str]] = [
        (make_request("no_such_action", container), ActionOutcome.FAILED, "unknown action 'no_such_action'"),
        (make_request("cluster_thing", container), ActionOutcome.FAILED, "is a cluster action"),
        (make_request("pause_container", container, node="node-b"), ActionOutcome.FAILED, "not this node"),
        (
            make_request("pause_container", None, container_id="XYZ"),
            ActionOutcome.FAILED,
            "not a container id",
        ),
        (make_request("pause_container", None), ActionOutcome.FAILED, "needs target field(s): container_id"),
        (
            make_request("stop_container", container, parameters={"timeout": -1}),
            ActionOutcome.FAILED,
            "parameter timeout",
        ),
        (
            make_request("stop_container", container, op=ActionOp.UNDO, undo={}),
            ActionOutcome.FAILED,
            "cannot be undone",
        ),
        (make_request("pause_container", system), ActionOutcome.FAILED, "namespace kube-system is protected"),
        (
            make_request("pause_container", None, container_id="f" * 64),
            ActionOutcome.SKIPPED,
            "does not exist",
        ),
        (
            {"action_id": 77, "action": "pause_container", "requested_at": "2026-12-04T12:00:00Z"},
            ActionOutcome.FAILED,
            "invalid request: target",
        ),
    ]
    for payload, outcome, message in cases:
        result = await agent.handle(envelope_for(payload))
        assert result is not None, payload
        assert result.outcome is outcome, (payload, result.message)
        assert message in result.message, (payload, result.message)
    assert status(container) == status(system) == "running"
    assert len(await results(redis, redis_prefix)) == len(cases)
    # nothing identifies it: dropped (logged), nothing published
    assert await agent.handle(envelope_for({"action": "x"})) is None
    assert (
        await agent.handle(
            new_envelope("other.thing", {}, source="x", cluster_id="t", occurred_at=datetime.now(UTC))
        )
        is None
    )
    assert len(await results(redis, redis_prefix)) == len(cases)
    failed = REGISTRY.get_sample_value(
        "qcdr_node_agent_actions_total", {"action": "unknown", "outcome": "failed"}
    )
    assert failed is not None
    assert failed >= 1


def test_stream_names_agree_with_the_response_service() -> None:
    """One set of names: whatever the service's streams module names too must be the same."""
    from qcdr_response import streams as service_streams

    for name in ("NODE_ACTIONS_PREFIX", "ACTION_RESULTS"):
        if hasattr(service_streams, name):
            assert getattr(service_streams, name) == getattr(streams, name)
    if hasattr(service_streams, "node_actions_stream"):
        assert service_streams.node_actions_stream(NODE) == streams.node_actions_stream(NODE)
    assert streams.node_actions_stream(NODE) == "response:node-actions:node-a"
    assert streams.ACTION_RESULTS == "response:action-results"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"QCDR_CONTAINER_RUNTIME": "podman"}, "container_runtime"),
        ({"NODE_NAME": "Not A Name"}, "QCDR_NODE_NAME"),
    ],
)
def test_a_bad_setting_stops_the_agent_with_one_line(
    env: dict[str, str], field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qcdr_response.cli import cli
    from qcdr_response.node_agent.settings import get_settings
    from typer.testing import CliRunner

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["node-agent"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"qcdr-response node-agent: configuration error: {field}: ")
