"""cordon_node: the target's node or the pod's, undo only when it was schedulable before."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionTarget
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.actions.base import ActionError, InvalidRequestError, TargetGoneError
from qcdr_response.actions.cluster._context import ClusterContext
from qcdr_response.actions.cluster.cordon_node import CORDONED_BY, CordonNode

from tests.response.actions.cluster.conftest import calls, make_pod, make_request, undo_of, writes

ACTION = CordonNode()


def node(name: str = "node-1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


def unschedulable(server: K8sTestServer, name: str = "node-1") -> bool:
    return bool(server.objects("Node")[(None, name)].get("spec", {}).get("unschedulable"))


async def test_cordon_the_pods_node_then_undo(server: K8sTestServer, ctx: ClusterContext) -> None:
    uid = server.seed(node())["metadata"]["uid"]
    server.seed(make_pod(node="node-1"))
    request = make_request("cordon_node")
    assert await ACTION.present(ctx, request) is False
    done = await ACTION.execute(ctx, request)
    assert done.outcome == ActionOutcome.SUCCEEDED
    (patch,) = writes(server)
    assert (patch.method, patch.path, patch.query) == (
        "PATCH",
        "/api/v1/nodes/node-1",
        {"fieldManager": "qcdr"},
    )
    mark = {CORDONED_BY: str(request.action_id)}
    assert patch.body == {"metadata": {"uid": uid, "annotations": mark}, "spec": {"unschedulable": True}}
    assert unschedulable(server)
    assert done.undo == {"node": "node-1", "uid": uid, "was_unschedulable": False}
    assert await ACTION.present(ctx, request) is True
    # recovery after a crash: the annotation tells this action's cordon from an earlier one
    assert await ACTION.recovered_undo(ctx, request) == done.undo

    undone = await ACTION.undo(ctx, undo_of(request, done.undo))
    assert undone.outcome == ActionOutcome.SUCCEEDED
    assert not unschedulable(server)
    assert writes(server)[-1].body == {
        "metadata": {"uid": uid, "annotations": {CORDONED_BY: None}},
        "spec": {"unschedulable": None},
    }
    assert CORDONED_BY not in (server.objects("Node")[(None, "node-1")]["metadata"].get("annotations") or {})


async def test_a_node_cordoned_before_stays_cordoned(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(node(unschedulable=True))
    request = make_request("cordon_node", ActionTarget(node="node-1"))
    done = await ACTION.execute(ctx, request)
    assert writes(server) == []
    assert done.undo is not None
    assert done.undo["was_unschedulable"] is True
    assert await ACTION.recovered_undo(ctx, request) == done.undo  # not ours: left cordoned by undo
    undone = await ACTION.undo(ctx, undo_of(request, done.undo))
    assert "left cordoned" in undone.message
    assert unschedulable(server)
    assert writes(server) == []


async def test_dry_run(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(node())
    done = await ACTION.execute(ctx, make_request("cordon_node", ActionTarget(node="node-1"), dry_run=True))
    assert done.outcome == ActionOutcome.DRY_RUN
    (patch,) = writes(server)
    assert patch.query == {"fieldManager": "qcdr", "dryRun": "All"}
    assert not unschedulable(server)


async def test_gone_and_unscheduled(server: K8sTestServer, ctx: ClusterContext) -> None:
    with pytest.raises(TargetGoneError, match="get node node-1: 404"):
        await ACTION.execute(ctx, make_request("cordon_node", ActionTarget(node="node-1")))
    server.seed(make_pod(node=None))
    with pytest.raises(ActionError, match="not scheduled"):
        await ACTION.execute(ctx, make_request("cordon_node"))
    request = make_request("cordon_node", ActionTarget(node="node-1"))
    record = {"node": "node-1", "uid": "00000000-0000-4000-8000-000000000000", "was_unschedulable": False}
    server.seed(node())
    with pytest.raises(TargetGoneError, match="replaced"):
        await ACTION.undo(ctx, undo_of(request, record))
    assert writes(server) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (ActionTarget(), "node, or namespace and pod"),
        (ActionTarget(pod="web-1"), "node, or namespace and pod"),
        (ActionTarget(node="Node_1"), "node"),
    ],
)
async def test_invalid_targets(
    server: K8sTestServer, ctx: ClusterContext, target: ActionTarget, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await ACTION.execute(ctx, make_request("cordon_node", target))
    assert calls(server) == []
