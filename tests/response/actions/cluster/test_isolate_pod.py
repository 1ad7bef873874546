"""isolate_pod against the Kubernetes API test server: the requests, the policies (valid for
Cilium's schema, Cilium's semantics and Kubernetes), the label, undo, present(), dry-run."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from qcdr_common.contracts.actions.v1 import ActionOutcome, ActionTarget
from qcdr_common.testing.k8s_server import DEFAULT_INSTALLED, GVK, K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.actions.base import InvalidRequestError, TargetGoneError
from qcdr_response.actions.cluster._context import QUARANTINE_LABEL, ClusterContext
from qcdr_response.actions.cluster._isolation import DENIED_ENTITIES, cilium_policy, network_policy
from qcdr_response.actions.cluster.isolate_pod import IsolatePod
from qcdr_response.policies.targets import CiliumTarget
from qcdr_response.policies.validator import errors
from qcdr_response.policies.validator_cilium import validate_cilium_policy

from tests.response.actions.cluster.conftest import (
    CLUSTER_KINDS,
    NAMESPACE,
    calls,
    make_pod,
    make_request,
    undo_of,
    writes,
)

ACTION = IsolatePod()
CNP_PATH = f"/apis/cilium.io/v2/namespaces/{NAMESPACE}/ciliumnetworkpolicies"
NP_PATH = f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies"
POD_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods/web-1"


def test_the_cilium_policy_denies_all_but_the_host(shared_path: Path) -> None:
    request = make_request("isolate_pod")
    body = cilium_policy(request, NAMESPACE, QUARANTINE_LABEL)
    assert ManifestValidator(shared_path).errors(body) == []
    assert errors(validate_cilium_policy(body, CiliumTarget())) == []
    spec = body["spec"]
    value = f"qcdr-{request.action_id}"
    assert spec["endpointSelector"] == {"matchLabels": {QUARANTINE_LABEL: value}}
    # only the host is allowed; deny rules (which beat every allow) cover everything else
    assert spec["ingress"] == [{"fromEntities": ["host"]}]
    assert spec["egress"] == [{"toEntities": ["host"]}]
    assert spec["enableDefaultDeny"] == {"ingress": True, "egress": True}
    for direction, peer in (("ingressDeny", "from"), ("egressDeny", "to")):
        entities = {e for rule in spec[direction] for e in rule.get(f"{peer}Entities", [])}
        assert entities == set(DENIED_ENTITIES)
        assert {"world", "remote-node", "kube-apiserver"} <= entities
        # never an entity that contains the host: that would cut the kubelet probes too
        assert not entities & {"host", "cluster", "all"}
        endpoints = [s for rule in spec[direction] for s in rule.get(f"{peer}Endpoints", [])]
        assert endpoints == [
            {"matchExpressions": [{"key": "io.kubernetes.pod.namespace", "operator": "Exists"}]}
        ]
    # never pruned by the policy pipeline (which deletes managed-by=qcdr objects it did not generate)
    assert "app.kubernetes.io/managed-by" not in body["metadata"]["labels"]


def test_the_network_policy_is_a_valid_deny_all() -> None:
    body = network_policy(make_request("isolate_pod"), NAMESPACE, QUARANTINE_LABEL)
    kubernetes_validate.validate(body, "1.31", strict=True)  # raises ValidationError when invalid
    assert body["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in body["spec"]
    assert "egress" not in body["spec"]


async def test_isolate_then_undo(server: K8sTestServer, ctx: ClusterContext) -> None:
    pod = server.seed(make_pod())
    uid = pod["metadata"]["uid"]
    request = make_request("isolate_pod", ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid=uid))
    done = await ACTION.execute(ctx, request)
    assert done.outcome == ActionOutcome.SUCCEEDED
    name, value = f"qcdr-isolate-{request.action_id}", f"qcdr-{request.action_id}"
    # policies first, then the label
    assert [(r.method, r.path) for r in writes(server)] == [
        ("POST", CNP_PATH),
        ("POST", NP_PATH),
        ("PATCH", POD_PATH),
    ]
    for record in writes(server):
        assert record.query == {"fieldManager": "qcdr"}
        assert record.status_code in (200, 201)
    assert writes(server)[2].content_type == "application/merge-patch+json"
    assert writes(server)[2].body == {"metadata": {"uid": uid, "labels": {QUARANTINE_LABEL: value}}}

    cnp = server.objects("CiliumNetworkPolicy")[(NAMESPACE, name)]
    assert cnp["spec"]["endpointSelector"] == {"matchLabels": {QUARANTINE_LABEL: value}}
    assert cnp["metadata"]["annotations"]["qcdr.qualys.com/reason"] == "finding: reverse shell"
    np = server.objects("NetworkPolicy")[(NAMESPACE, name)]
    assert np["spec"] == {
        "podSelector": {"matchLabels": {QUARANTINE_LABEL: value}},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert server.objects("Pod")[(NAMESPACE, "web-1")]["metadata"]["labels"] == {
        "app": "web",
        QUARANTINE_LABEL: value,
    }
    assert done.undo == {
        "namespace": NAMESPACE,
        "pod": "web-1",
        "pod_uid": uid,
        "label_key": QUARANTINE_LABEL,
        "label_value": value,
        "policies": [
            {"api_version": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "name": name},
            {"api_version": "networking.k8s.io/v1", "kind": "NetworkPolicy", "name": name},
        ],
    }
    assert await ACTION.present(ctx, request) is True
    # recovery after a crash rebuilds the record execute returned (undo and the lease need it)
    assert await ACTION.recovered_undo(ctx, request) == done.undo
    # a second run (a redelivery) finds its own policies and succeeds
    assert (await ACTION.execute(ctx, request)).outcome == ActionOutcome.SUCCEEDED

    before = len(server.requests)
    undone = await ACTION.undo(ctx, undo_of(request, done.undo))
    assert undone.outcome == ActionOutcome.SUCCEEDED
    assert [(r.method, r.path) for r in writes(server, before)] == [
        ("PATCH", POD_PATH),
        ("DELETE", f"{CNP_PATH}/{name}"),
        ("DELETE", f"{NP_PATH}/{name}"),
    ]
    assert server.objects("CiliumNetworkPolicy") == {}
    assert server.objects("NetworkPolicy") == {}
    assert server.objects("Pod")[(NAMESPACE, "web-1")]["metadata"]["labels"] == {"app": "web"}
    assert await ACTION.present(ctx, request) is False
    # undo again: everything is already gone, which is fine
    again = await ACTION.undo(ctx, undo_of(request, done.undo))
    assert again.outcome == ActionOutcome.SUCCEEDED
    assert set(again.details["already_gone"]) == {
        f"CiliumNetworkPolicy {NAMESPACE}/{name}",
        f"NetworkPolicy {NAMESPACE}/{name}",
    }


async def test_dry_run_sends_the_same_requests_and_changes_nothing(
    server: K8sTestServer, ctx: ClusterContext
) -> None:
    server.seed(make_pod())
    request = make_request("isolate_pod", dry_run=True)
    done = await ACTION.execute(ctx, request)
    assert done.outcome == ActionOutcome.DRY_RUN
    assert done.undo is None
    assert [(r.method, r.path, r.query) for r in writes(server)] == [
        ("POST", CNP_PATH, {"fieldManager": "qcdr", "dryRun": "All"}),
        ("POST", NP_PATH, {"fieldManager": "qcdr", "dryRun": "All"}),
        ("PATCH", POD_PATH, {"fieldManager": "qcdr", "dryRun": "All"}),
    ]
    assert all(r.status_code in (200, 201) for r in writes(server))
    assert [s["kind"] for s in done.details["requests"]] == ["CiliumNetworkPolicy", "NetworkPolicy", "Pod"]
    assert done.details["requests"][0]["body"]["spec"]["ingress"] == [{"fromEntities": ["host"]}]
    assert server.objects("CiliumNetworkPolicy") == {}
    assert server.objects("NetworkPolicy") == {}
    assert QUARANTINE_LABEL not in server.objects("Pod")[(NAMESPACE, "web-1")]["metadata"]["labels"]
    assert await ACTION.present(ctx, request) is False


async def test_without_cilium_the_network_policy_carries_on(shared_path: Path) -> None:
    server = K8sTestServer(
        installed=CLUSTER_KINDS - {GVK("cilium.io", "v2", "CiliumNetworkPolicy")},
        validator=ManifestValidator(shared_path),
        namespaces=(NAMESPACE,),
    )
    with server.serve():
        server.seed(make_pod())
        async with server.async_client() as client:
            ctx = ClusterContext(client=client)
            request = make_request("isolate_pod")
            done = await ACTION.execute(ctx, request)
            assert done.outcome == ActionOutcome.SUCCEEDED
            assert "not served" in done.details["cilium"]
            assert done.undo is not None
            assert [p["kind"] for p in done.undo["policies"]] == ["NetworkPolicy"]
            assert set(server.objects("NetworkPolicy")) == {(NAMESPACE, f"qcdr-isolate-{request.action_id}")}
            assert await ACTION.present(ctx, request) is True
            assert await ACTION.recovered_undo(ctx, request) == done.undo
            await ACTION.undo(ctx, undo_of(request, done.undo))
            assert server.objects("NetworkPolicy") == {}


async def test_gone_or_replaced_pod_is_refused_before_any_write(
    server: K8sTestServer, ctx: ClusterContext
) -> None:
    with pytest.raises(TargetGoneError, match=r"get pod shop/web-1: 404"):
        await ACTION.execute(ctx, make_request("isolate_pod"))
    server.seed(make_pod())
    replaced = ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid="00000000-0000-4000-8000-000000000000")
    with pytest.raises(TargetGoneError, match="was replaced"):
        await ACTION.execute(ctx, make_request("isolate_pod", replaced))
    with pytest.raises(TargetGoneError):
        await ACTION.present(ctx, make_request("isolate_pod", replaced))
    assert writes(server) == []


async def test_a_failed_label_removes_the_policies(server: K8sTestServer, ctx: ClusterContext) -> None:
    """The pod disappears between the read and the label patch: no policy is left behind."""
    server.seed(make_pod())
    original = ctx.client.patch

    async def delete_then_patch(*args: object, **kwargs: object) -> object:
        server.store.delete(server.discovery.find_kind("v1", "Pod"), NAMESPACE, "web-1")  # type: ignore[arg-type]
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    ctx.client.patch = delete_then_patch  # type: ignore[method-assign]
    with pytest.raises(TargetGoneError, match="patch pod shop/web-1: 404"):
        await ACTION.execute(ctx, make_request("isolate_pod"))
    assert server.objects("CiliumNetworkPolicy") == {}
    assert server.objects("NetworkPolicy") == {}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (ActionTarget(namespace=NAMESPACE), "needs target field"),
        (ActionTarget(namespace="Shop", pod="web-1"), "namespace"),
        (ActionTarget(namespace=NAMESPACE, pod="web_1"), "pod"),
        (ActionTarget(namespace=NAMESPACE, pod="web-1", pod_uid="not-a-uid"), "pod_uid"),
    ],
)
async def test_invalid_targets_are_refused_before_any_request(
    server: K8sTestServer, ctx: ClusterContext, target: ActionTarget, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await ACTION.execute(ctx, make_request("isolate_pod", target))
    assert calls(server) == []


async def test_undo_refuses_a_record_it_did_not_write(server: K8sTestServer, ctx: ClusterContext) -> None:
    request = make_request("isolate_pod")
    with pytest.raises(InvalidRequestError, match="undo record"):
        await ACTION.undo(ctx, undo_of(request, None))
    forged = {
        "namespace": NAMESPACE,
        "pod": "web-1",
        "pod_uid": "00000000-0000-4000-8000-000000000000",
        "label_key": QUARANTINE_LABEL,
        "label_value": "qcdr-1",
        "policies": [{"api_version": "v1", "kind": "Secret", "name": "db-password"}],
    }
    with pytest.raises(InvalidRequestError, match="Secret"):
        await ACTION.undo(ctx, undo_of(request, forged))
    assert writes(server) == []


def test_default_installed_is_unchanged() -> None:
    # the cluster kinds are opt-in on the test server: other suites see the same discovery
    assert GVK("", "v1", "Node") not in DEFAULT_INSTALLED
