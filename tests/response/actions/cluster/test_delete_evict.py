"""delete_pod and evict_pod: the requests, dry-run, PodDisruptionBudgets, present()."""

from __future__ import annotations

import pytest
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionTarget
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.actions.base import ActionError, InvalidRequestError, TargetGoneError
from qcdr_response.actions.cluster._context import ClusterContext
from qcdr_response.actions.cluster.delete_pod import DeletePod
from qcdr_response.actions.cluster.evict_pod import EvictPod

from tests.response.actions.cluster.conftest import NAMESPACE, calls, make_pod, make_request, writes

POD_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods/web-1"
OTHER_UID = "00000000-0000-4000-8000-000000000000"


def pdb(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
    }


async def test_delete(server: K8sTestServer, ctx: ClusterContext) -> None:
    uid = server.seed(make_pod())["metadata"]["uid"]
    request = make_request("delete_pod", ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid=uid))
    assert await DeletePod().present(ctx, request) is False

    dry = await DeletePod().execute(ctx, request.model_copy(update={"dry_run": True}))
    assert dry.outcome == ActionOutcome.DRY_RUN
    assert (NAMESPACE, "web-1") in server.objects("Pod")

    done = await DeletePod().execute(
        ctx, request.model_copy(update={"parameters": {"grace_period_seconds": 5}})
    )
    assert done.outcome == ActionOutcome.SUCCEEDED
    assert done.undo is None
    assert [(r.method, r.path, r.query) for r in writes(server)] == [
        ("DELETE", POD_PATH, {"gracePeriodSeconds": "30", "dryRun": "All"}),
        ("DELETE", POD_PATH, {"gracePeriodSeconds": "5"}),
    ]
    assert server.objects("Pod") == {}
    assert await DeletePod().present(ctx, request) is True
    with pytest.raises(TargetGoneError):
        await DeletePod().execute(ctx, request)


async def test_delete_refuses_a_replaced_pod(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_pod())
    target = ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid=OTHER_UID)
    with pytest.raises(TargetGoneError, match="was replaced"):
        await DeletePod().execute(ctx, make_request("delete_pod", target))
    # the effect of deleting the pod that was named is there: that pod is gone
    assert await DeletePod().present(ctx, make_request("delete_pod", target)) is True
    assert writes(server) == []
    with pytest.raises(InvalidRequestError, match="grace_period_seconds"):
        await DeletePod().execute(ctx, make_request("delete_pod", parameters={"grace_period_seconds": -1}))


async def test_evict(server: K8sTestServer, ctx: ClusterContext) -> None:
    uid = server.seed(make_pod())["metadata"]["uid"]
    request = make_request("evict_pod", ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid=uid))
    dry = await EvictPod().execute(ctx, request.model_copy(update={"dry_run": True}))
    assert dry.outcome == ActionOutcome.DRY_RUN
    assert (NAMESPACE, "web-1") in server.objects("Pod")
    done = await EvictPod().execute(
        ctx, request.model_copy(update={"parameters": {"grace_period_seconds": 10}})
    )
    assert done.outcome == ActionOutcome.SUCCEEDED
    evictions = writes(server)
    assert [(r.method, r.path, r.query) for r in evictions] == [
        ("POST", f"{POD_PATH}/eviction", {"fieldManager": "qcdr", "dryRun": "All"}),
        ("POST", f"{POD_PATH}/eviction", {"fieldManager": "qcdr"}),
    ]
    assert evictions[1].body == {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": NAMESPACE},
        "deleteOptions": {"kind": "DeleteOptions", "gracePeriodSeconds": 10, "preconditions": {"uid": uid}},
    }
    assert server.objects("Pod") == {}
    assert await EvictPod().present(ctx, request) is True
    with pytest.raises(TargetGoneError, match="get pod shop/web-1: 404"):
        await EvictPod().execute(ctx, request)


async def test_a_disruption_budget_refuses_the_eviction(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_pod())
    server.seed(make_pod("web-2"))
    server.seed(pdb(minAvailable=2))
    for dry_run in (True, False):
        with pytest.raises(ActionError) as exc:
            await EvictPod().execute(ctx, make_request("evict_pod", dry_run=dry_run))
        assert not isinstance(exc.value, TargetGoneError)
        assert exc.value.reason == (
            "evict pod shop/web-1: 429 Cannot evict pod as it would violate the pod's disruption budget. "
            "(The disruption budget web needs 2 healthy pods and has 2 currently)"
        )
    assert set(server.objects("Pod")) == {(NAMESPACE, "web-1"), (NAMESPACE, "web-2")}
    # delete_pod does not ask the budget
    assert (await DeletePod().execute(ctx, make_request("delete_pod"))).outcome == ActionOutcome.SUCCEEDED


async def test_names_are_checked_first(server: K8sTestServer, ctx: ClusterContext) -> None:
    for action in (DeletePod(), EvictPod()):
        with pytest.raises(InvalidRequestError):
            await action.execute(
                ctx, make_request(action.name, ActionTarget(namespace=NAMESPACE, pod="../web"))
            )
        with pytest.raises(InvalidRequestError, match="needs target field"):
            await action.execute(ctx, make_request(action.name, ActionTarget(pod="web-1")))
    assert calls(server) == []
