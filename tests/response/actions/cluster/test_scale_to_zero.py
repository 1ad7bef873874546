"""scale_to_zero: owner resolution (Pod → ReplicaSet → Deployment, StatefulSet, bare ReplicaSet),
the scale subresource with preconditions, undo that respects a later change, DaemonSets refused."""

from __future__ import annotations

import json

import pytest
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionTarget
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.actions.base import ActionError, InvalidRequestError, TargetGoneError
from qcdr_response.actions.cluster._context import ClusterContext
from qcdr_response.actions.cluster.scale_to_zero import SCALED_BY, ScaleToZero

from tests.response.actions.cluster.conftest import (
    NAMESPACE,
    calls,
    make_pod,
    make_request,
    make_workload,
    undo_of,
    writes,
)

ACTION = ScaleToZero()
POD = "web-5d8f-x7k2p"  # a Deployment's pod: <replicaset>-<suffix>
APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}"


def replicas(server: K8sTestServer, kind: str, name: str = "web") -> int:
    value: int = server.objects(kind)[(NAMESPACE, name)]["spec"]["replicas"]
    return value


async def test_deployment_through_its_replicaset(server: K8sTestServer, ctx: ClusterContext) -> None:
    deployment = server.seed(make_workload("Deployment"))
    server.seed(make_workload("ReplicaSet", "web-5d8f", owner=("Deployment", "web")))
    server.seed(make_pod(POD, owner=("apps/v1", "ReplicaSet", "web-5d8f")))
    request = make_request("scale_to_zero", ActionTarget(namespace=NAMESPACE, pod=POD))
    assert await ACTION.present(ctx, request) is False

    before = len(server.requests)
    done = await ACTION.execute(ctx, request)
    assert done.outcome == ActionOutcome.SUCCEEDED
    assert calls(server, before) == [
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}"),
        ("GET", f"{APPS}/replicasets/web-5d8f"),
        ("GET", f"{APPS}/deployments/web/scale"),
        ("PATCH", f"{APPS}/deployments/web"),
        ("PATCH", f"{APPS}/deployments/web/scale"),
    ]
    annotate, patch = writes(server)
    uid, rv = deployment["metadata"]["uid"], deployment["metadata"]["resourceVersion"]
    # the count goes on the owner first, conditional on the version the scale was read at
    mark = json.dumps({"action_id": request.action_id, "previous_replicas": 3})
    assert annotate.body == {
        "metadata": {"uid": uid, "resourceVersion": rv, "annotations": {SCALED_BY: mark}}
    }
    assert patch.query == {"fieldManager": "qcdr"}
    annotated_rv = server.objects("Deployment")[(NAMESPACE, "web")]["metadata"]["resourceVersion"]
    assert patch.body["spec"] == {"replicas": 0}
    assert patch.body["metadata"]["uid"] == uid
    assert int(patch.body["metadata"]["resourceVersion"]) < int(annotated_rv)  # the annotation's version
    assert replicas(server, "Deployment") == 0
    assert ".spec.replicas" in server.owners("apps/v1", "Deployment", "web", NAMESPACE)["qcdr (Update)"]
    assert replicas(server, "ReplicaSet", "web-5d8f") == 3  # the Deployment's controller scales it
    assert done.undo == {
        "namespace": NAMESPACE,
        "kind": "Deployment",
        "name": "web",
        "uid": uid,
        "previous_replicas": 3,
        "replicas": 0,
    }
    assert await ACTION.present(ctx, request) is True

    # a crash before the result was recorded: the pod is gone by the time recovery runs (zero
    # replicas), and the owner and its count are found through the annotation
    pod_type = server.discovery.find_kind("v1", "Pod")
    assert pod_type is not None
    server.store.delete(pod_type, NAMESPACE, POD)
    assert await ACTION.present(ctx, request) is True
    assert await ACTION.recovered_undo(ctx, request) == done.undo
    other = make_request("scale_to_zero", ActionTarget(namespace=NAMESPACE, pod=POD))
    with pytest.raises(TargetGoneError):  # not this action's mark: the pod is simply gone
        await ACTION.present(ctx, other)

    before = len(server.requests)
    undone = await ACTION.undo(ctx, undo_of(request, done.undo))
    assert undone.outcome == ActionOutcome.SUCCEEDED
    assert replicas(server, "Deployment") == 3
    assert [w.path for w in writes(server, before)] == [
        f"{APPS}/deployments/web/scale",
        f"{APPS}/deployments/web",
    ]
    assert writes(server, before)[-1].body == {"metadata": {"uid": uid, "annotations": {SCALED_BY: None}}}
    assert SCALED_BY not in (
        server.objects("Deployment")[(NAMESPACE, "web")]["metadata"].get("annotations") or {}
    )


async def test_statefulset_recovered_without_its_pod(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_workload("StatefulSet", replicas=2))
    server.seed(make_pod("web-0", owner=("apps/v1", "StatefulSet", "web")))
    request = make_request("scale_to_zero", ActionTarget(namespace=NAMESPACE, pod="web-0"))
    done = await ACTION.execute(ctx, request)
    pod_type = server.discovery.find_kind("v1", "Pod")
    assert pod_type is not None
    server.store.delete(pod_type, NAMESPACE, "web-0")
    assert await ACTION.present(ctx, request) is True
    assert await ACTION.recovered_undo(ctx, request) == done.undo
    await ACTION.undo(ctx, undo_of(request, done.undo))
    assert replicas(server, "StatefulSet") == 2


async def test_recovery_of_an_owner_already_at_zero(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_workload("Deployment", replicas=0))
    target = ActionTarget(namespace=NAMESPACE, owner_kind="Deployment", owner_name="web")
    request = make_request("scale_to_zero", target)
    done = await ACTION.execute(ctx, request)
    assert await ACTION.recovered_undo(ctx, request) == done.undo
    assert done.undo is not None
    assert done.undo["previous_replicas"] == 0


@pytest.mark.parametrize(
    ("kind", "owner"),
    [("StatefulSet", ("apps/v1", "StatefulSet", "web")), ("ReplicaSet", ("apps/v1", "ReplicaSet", "web"))],
)
async def test_statefulset_and_bare_replicaset(
    server: K8sTestServer, ctx: ClusterContext, kind: str, owner: tuple[str, str, str]
) -> None:
    server.seed(make_workload(kind, replicas=2))
    server.seed(make_pod(owner=owner))
    request = make_request("scale_to_zero")
    done = await ACTION.execute(ctx, request)
    assert [w.path for w in writes(server)] == [
        f"{APPS}/{kind.lower()}s/web",
        f"{APPS}/{kind.lower()}s/web/scale",
    ]
    assert replicas(server, kind) == 0
    await ACTION.undo(ctx, undo_of(request, done.undo))
    assert replicas(server, kind) == 2


async def test_explicit_owner_and_dry_run(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_workload("Deployment"))
    target = ActionTarget(namespace=NAMESPACE, owner_kind="Deployment", owner_name="web")
    done = await ACTION.execute(ctx, make_request("scale_to_zero", target, dry_run=True))
    assert done.outcome == ActionOutcome.DRY_RUN
    assert done.details["undo"]["previous_replicas"] == 3
    annotate, patch = writes(server)
    for write in (annotate, patch):
        assert write.query == {"fieldManager": "qcdr", "dryRun": "All"}
        assert write.status_code == 200
    assert replicas(server, "Deployment") == 3
    assert SCALED_BY not in (
        server.objects("Deployment")[(NAMESPACE, "web")]["metadata"].get("annotations") or {}
    )


async def test_undo_respects_a_later_change(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_workload("Deployment"))
    target = ActionTarget(namespace=NAMESPACE, owner_kind="Deployment", owner_name="web")
    request = make_request("scale_to_zero", target)
    done = await ACTION.execute(ctx, request)
    deploy = server.discovery.find_kind("apps/v1", "Deployment")
    assert deploy is not None
    server.store.merge_patch(deploy, NAMESPACE, "web", {"spec": {"replicas": 1}}, "kubectl-scale")
    with pytest.raises(
        ActionError, match=r"changed since the action \(now 1, qcdr set 0\): not restored to 3"
    ):
        await ACTION.undo(ctx, undo_of(request, done.undo))
    assert replicas(server, "Deployment") == 1
    # the owner deleted and re-created under the same name: not the one that was scaled
    server.store.delete(deploy, NAMESPACE, "web")
    server.seed(make_workload("Deployment", replicas=0))
    with pytest.raises(TargetGoneError, match="was replaced"):
        await ACTION.undo(ctx, undo_of(request, done.undo))
    server.store.delete(deploy, NAMESPACE, "web")
    with pytest.raises(TargetGoneError, match="404"):
        await ACTION.undo(ctx, undo_of(request, done.undo))


async def test_already_at_zero(server: K8sTestServer, ctx: ClusterContext) -> None:
    server.seed(make_workload("StatefulSet", replicas=0))
    target = ActionTarget(namespace=NAMESPACE, owner_kind="StatefulSet", owner_name="web")
    done = await ACTION.execute(ctx, make_request("scale_to_zero", target))
    assert done.outcome == ActionOutcome.SUCCEEDED
    assert writes(server) == []
    assert done.undo is not None
    assert done.undo["previous_replicas"] == 0


async def test_daemonsets_and_other_owners_are_refused(server: K8sTestServer, ctx: ClusterContext) -> None:
    with pytest.raises(InvalidRequestError, match="DaemonSets cannot be scaled"):
        await ACTION.execute(
            ctx,
            make_request(
                "scale_to_zero", ActionTarget(namespace=NAMESPACE, owner_kind="DaemonSet", owner_name="web")
            ),
        )
    assert calls(server) == []
    server.seed(make_workload("DaemonSet"))
    server.seed(make_pod(owner=("apps/v1", "DaemonSet", "web")))
    with pytest.raises(ActionError, match="DaemonSets cannot be scaled"):
        await ACTION.execute(ctx, make_request("scale_to_zero"))
    server.seed(make_pod("job-1", owner=("batch/v1", "Job", "backup")))
    with pytest.raises(ActionError, match="batch/v1 Job backup has no scale"):
        await ACTION.execute(
            ctx, make_request("scale_to_zero", ActionTarget(namespace=NAMESPACE, pod="job-1"))
        )
    server.seed(make_pod("kruise-1", owner=("apps.kruise.io/v1beta1", "StatefulSet", "web")))
    with pytest.raises(ActionError, match=r"apps\.kruise\.io/v1beta1 StatefulSet web has no scale"):
        await ACTION.execute(
            ctx, make_request("scale_to_zero", ActionTarget(namespace=NAMESPACE, pod="kruise-1"))
        )
    server.seed(make_pod("bare", labels={"app": "bare"}))
    with pytest.raises(ActionError, match="no controller"):
        await ACTION.execute(
            ctx, make_request("scale_to_zero", ActionTarget(namespace=NAMESPACE, pod="bare"))
        )
    assert writes(server) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (ActionTarget(namespace=NAMESPACE), "pod, or owner_kind and owner_name"),
        (ActionTarget(namespace=NAMESPACE, owner_kind="Deployment"), "go together"),
        (ActionTarget(namespace=NAMESPACE, owner_kind="CronJob", owner_name="x"), "must be one of"),
        (ActionTarget(namespace=NAMESPACE, owner_kind="Deployment", owner_name="Web"), "owner_name"),
        (ActionTarget(pod="web-1"), "namespace"),
    ],
)
async def test_invalid_targets(
    server: K8sTestServer, ctx: ClusterContext, target: ActionTarget, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await ACTION.execute(ctx, make_request("scale_to_zero", target))
    assert calls(server) == []
