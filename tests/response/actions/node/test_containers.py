"""stop, pause/unpause (+ undo) and the checks every node action makes on its container."""

from __future__ import annotations

import uuid

import pytest
from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome
from qcdr_response.actions.base import ActionError, TargetGoneError
from qcdr_response.actions.node._context import NodeContext

from tests.response.actions.node.conftest import RunPod, make_request, node_actions, status

NODE_ACTIONS = {
    "stop_container",
    "pause_container",
    "unpause_container",
    "kill_process",
    "quarantine_file",
    "capture_forensics",
}


def test_every_node_module_registers_its_action() -> None:
    registry = node_actions()
    assert set(registry.names()) >= NODE_ACTIONS
    for name in NODE_ACTIONS:
        action = registry.get(name)
        assert action.scope.value == "node"
        assert registry.origin(name) == f"qcdr_response.actions.node.{name}"
    assert registry.get("pause_container").containment
    assert registry.get("pause_container").reversible
    assert registry.get("quarantine_file").reversible
    assert not registry.get("stop_container").reversible


async def test_stop_container(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod()
    stop = node_actions().get("stop_container")
    request = make_request("stop_container", container, parameters={"timeout": 1})
    assert await stop.present(node_ctx, request) is False

    dry = await stop.execute(node_ctx, make_request("stop_container", container, dry_run=True))
    assert dry.outcome is ActionOutcome.DRY_RUN
    assert status(container) == "running"

    done = await stop.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    assert status(container) == "exited"
    assert await stop.present(node_ctx, request) is True
    again = await stop.execute(node_ctx, request)
    assert again.outcome is ActionOutcome.SUCCEEDED
    assert "already" in again.message

    paused = run_pod()
    paused.pause()
    done = await stop.execute(node_ctx, make_request("stop_container", paused, parameters={"timeout": 0}))
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    assert status(paused) == "exited"


async def test_pause_undo_and_unpause(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod()
    actions = node_actions()
    pause, unpause = actions.get("pause_container"), actions.get("unpause_container")

    dry = await pause.execute(node_ctx, make_request("pause_container", container, dry_run=True))
    assert dry.outcome is ActionOutcome.DRY_RUN
    assert status(container) == "running"

    request = make_request("pause_container", container)
    assert await pause.present(node_ctx, request) is False
    done = await pause.execute(node_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED
    assert status(container) == "paused"
    assert done.undo == {"container_id": container.id}
    assert await pause.present(node_ctx, request) is True
    assert await pause.recovered_undo(node_ctx, request) == done.undo

    undo = make_request("pause_container", container, op=ActionOp.UNDO, undo=done.undo)
    assert await pause.present(node_ctx, undo) is False
    dry_undo = make_request("pause_container", container, op=ActionOp.UNDO, undo=done.undo, dry_run=True)
    assert (await pause.undo(node_ctx, dry_undo)).outcome is ActionOutcome.DRY_RUN
    assert status(container) == "paused"
    undone = await pause.undo(node_ctx, undo)
    assert undone.outcome is ActionOutcome.SUCCEEDED
    assert status(container) == "running"
    assert await pause.present(node_ctx, undo) is True

    await pause.execute(node_ctx, make_request("pause_container", container))
    unpaused = await unpause.execute(node_ctx, make_request("unpause_container", container))
    assert unpaused.outcome is ActionOutcome.SUCCEEDED
    assert status(container) == "running"
    assert (await unpause.execute(node_ctx, make_request("unpause_container", container))).message.endswith(
        "is not paused (running)"
    )


async def test_protected_namespace_is_refused(node_ctx: NodeContext, run_pod: RunPod) -> None:
    system, shop = run_pod(namespace="kube-system"), run_pod(namespace="shop")
    for action in (
        "stop_container",
        "pause_container",
        "kill_process",
        "quarantine_file",
        "capture_forensics",
    ):
        target = {"pid": 1234, "pid_start_ticks": 1, "path": "/tmp/x"}
        with pytest.raises(ActionError, match="namespace kube-system is protected"):
            await node_actions().get(action).execute(node_ctx, make_request(action, system, **target))
        # the namespace the request names is checked too
        request = make_request(action, shop, namespace="qualys-node-agent", **target)
        with pytest.raises(ActionError, match="namespace qualys-node-agent is protected"):
            await node_actions().get(action).execute(node_ctx, request)
    assert status(system) == status(shop) == "running"


async def test_configured_protected_namespaces(node_ctx: NodeContext, run_pod: RunPod) -> None:
    node_ctx.protected_namespaces = frozenset({"payments"})
    container = run_pod(namespace="payments")
    with pytest.raises(ActionError, match="protected"):
        await (
            node_actions()
            .get("pause_container")
            .execute(node_ctx, make_request("pause_container", container))
        )
    assert status(container) == "running"


async def test_unlabelled_container_is_not_a_pod(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod(namespace=None)
    pause = node_actions().get("pause_container")
    with pytest.raises(ActionError, match="not a Kubernetes pod"):
        await pause.execute(node_ctx, make_request("pause_container", container))
    node_ctx.allow_unlabelled = True
    assert (
        await pause.execute(node_ctx, make_request("pause_container", container, dry_run=True))
    ).outcome is (ActionOutcome.DRY_RUN)


async def test_pod_uid_and_namespace_must_match(node_ctx: NodeContext, run_pod: RunPod) -> None:
    uid = str(uuid.uuid4())
    container = run_pod(pod_uid=uid)
    stop = node_actions().get("stop_container")
    with pytest.raises(TargetGoneError, match="pod UID"):
        await stop.execute(node_ctx, make_request("stop_container", container, pod_uid=str(uuid.uuid4())))
    with pytest.raises(ActionError, match="belongs to namespace shop"):
        await stop.execute(node_ctx, make_request("stop_container", container, namespace="other"))
    assert status(container) == "running"
    done = await stop.execute(node_ctx, make_request("stop_container", container, pod_uid=uid, dry_run=True))
    assert done.outcome is ActionOutcome.DRY_RUN


async def test_missing_container_is_gone(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod()
    container.remove(force=True)
    for action in ("stop_container", "pause_container", "kill_process", "quarantine_file"):
        request = make_request(action, container, pid=1234, pid_start_ticks=1, path="/tmp/x")
        with pytest.raises(TargetGoneError, match="does not exist"):
            await node_actions().get(action).execute(node_ctx, request)


async def test_the_agents_own_container_is_refused(node_ctx: NodeContext, run_pod: RunPod) -> None:
    container = run_pod()
    node_ctx.own_container_id = str(container.id)
    with pytest.raises(ActionError, match="own container"):
        await (
            node_actions().get("stop_container").execute(node_ctx, make_request("stop_container", container))
        )
    assert status(container) == "running"
