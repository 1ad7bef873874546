"""The Kubernetes API test server, driven through a real lightkube AsyncClient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import ALL_NS, ApiError, AsyncClient, operators
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace
from lightkube.types import PatchType
from qcdr_common.testing.k8s_server import DEFAULT_INSTALLED, GVK, K8sTestServer, ObjectKey
from qcdr_common.testing.schemas import ManifestValidator

TracingPolicy = create_global_resource("cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies")
CiliumNetworkPolicy = create_namespaced_resource(
    "cilium.io", "v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies"
)
CiliumCIDRGroup = create_global_resource("cilium.io", "v2", "CiliumCIDRGroup", "ciliumcidrgroups")


@pytest.fixture
def server() -> Iterator[K8sTestServer]:
    srv = K8sTestServer()
    with srv.serve():
        yield srv


@pytest.fixture
async def client(server: K8sTestServer) -> AsyncIterator[AsyncClient]:
    async with server.async_client() as c:
        yield c


@pytest.fixture
def strict_server(shared_path: Path) -> Iterator[K8sTestServer]:
    srv = K8sTestServer(validator=ManifestValidator(shared_path))
    with srv.serve():
        yield srv


def tracing_policy(name: str = "tp", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "qcdr"}},
        "spec": spec or {"kprobes": [{"call": "sys_write", "syscall": True}]},
    }


def cnp(name: str, namespace: str, app: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "ingress": [{}]},
    }


async def apply(client: AsyncClient, body: dict[str, Any], manager: str = "qcdr", **kwargs: Any) -> Any:
    return await client.patch(
        TracingPolicy,
        body["metadata"]["name"],
        body,
        patch_type=PatchType.APPLY,
        field_manager=manager,
        **kwargs,
    )


def test_discovery(server: K8sTestServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/api").json()["versions"] == ["v1"]
        groups = {g["name"] for g in http.get("/apis").json()["groups"]}
        assert groups == {"cilium.io", "networking.k8s.io"}
        cilium = http.get("/apis/cilium.io/v2").json()
        assert cilium["kind"] == "APIResourceList"
        scopes = {r["kind"]: r["namespaced"] for r in cilium["resources"]}
        assert scopes == {
            "CiliumNetworkPolicy": True,
            "CiliumClusterwideNetworkPolicy": False,
            "CiliumCIDRGroup": False,
        }
        assert "patch" in cilium["resources"][0]["verbs"]
        core = {r["name"]: r["namespaced"] for r in http.get("/api/v1").json()["resources"]}
        assert core == {"configmaps": True, "namespaces": False, "pods": True, "pods/eviction": True}
        missing = http.get("/apis/example.com/v1")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert missing.json()["kind"] == "Status"


async def test_create_get_list_replace_delete(client: AsyncClient, server: K8sTestServer) -> None:
    for name, labels in [("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db"}), ("c", {})]:
        await client.create(ConfigMap(metadata=ObjectMeta(name=name, namespace="shop", labels=labels)))
    created = await client.get(ConfigMap, "a", namespace="shop")
    assert created.metadata is not None
    assert created.metadata.uid
    assert created.metadata.creationTimestamp
    assert created.metadata.generation == 1
    assert created.metadata.managedFields
    assert created.metadata.managedFields[0].operation == "Update"

    async def names(**kwargs: Any) -> list[str]:
        return [o.metadata.name async for o in client.list(ConfigMap, namespace="shop", **kwargs)]

    assert await names() == ["a", "b", "c"]
    assert await names(labels={"tier": "web"}) == ["a"]
    assert await names(labels={"tier": operators.not_equal("web")}) == ["b", "c"]
    assert await names(labels={"tier": None}) == ["a", "b"]
    assert await names(labels={"tier": operators.not_exists()}) == ["c"]
    assert await names(labels={"tier": operators.in_(["db", "cache"])}) == ["b"]
    assert await names(labels={"tier": operators.not_in(["db"])}) == ["a", "c"]
    assert await names(labels={"tier": "web", "env": "prod"}) == ["a"]
    assert await names(fields={"metadata.name": "b"}) == ["b"]
    assert await names(fields={"metadata.name": operators.not_equal("b")}) == ["a", "c"]
    assert await names(chunk_size=2) == ["a", "b", "c"]  # limit + continue
    assert [o.metadata.name async for o in client.list(ConfigMap, namespace="other")] == []

    with pytest.raises(ApiError) as exc:
        await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace="shop")))
    assert (exc.value.status.code, exc.value.status.reason) == (409, "AlreadyExists")

    created.data = {"k": "v"}
    replaced = await client.replace(created)
    assert replaced.data == {"k": "v"}
    assert int(replaced.metadata.resourceVersion) > int(created.metadata.resourceVersion)
    with pytest.raises(ApiError) as exc:
        await client.replace(created)  # stale resourceVersion
    assert (exc.value.status.code, exc.value.status.reason) == (409, "Conflict")

    await client.delete(ConfigMap, "a", namespace="shop")
    with pytest.raises(ApiError) as exc:
        await client.get(ConfigMap, "a", namespace="shop")
    assert exc.value.status.code == 404
    assert exc.value.status.message == 'configmaps "a" not found'
    with pytest.raises(ApiError) as exc:
        await client.delete(ConfigMap, "a", namespace="shop")
    assert exc.value.status.code == 404
    assert set(server.objects("ConfigMap")) == {("shop", "b"), ("shop", "c")}


async def test_cluster_scoped_namespaced_and_all_namespaces(
    client: AsyncClient, server: K8sTestServer
) -> None:
    await client.create(TracingPolicy(tracing_policy("tp1")))
    await client.create(CiliumNetworkPolicy(cnp("p", "a")))
    await client.create(CiliumNetworkPolicy(cnp("p", "b", app="db")))
    everywhere = [
        (o.metadata.namespace, o.metadata.name)
        async for o in client.list(CiliumNetworkPolicy, namespace=ALL_NS)
    ]
    assert everywhere == [("a", "p"), ("b", "p")]
    db = [
        o.metadata.namespace
        async for o in client.list(CiliumNetworkPolicy, namespace=ALL_NS, labels={"app": "db"})
    ]
    assert db == ["b"]
    assert [o.metadata.name async for o in client.list(TracingPolicy)] == ["tp1"]
    assert [n.metadata.name async for n in client.list(Namespace)] == ["default", "kube-system"]
    snapshot = server.snapshot()
    assert ObjectKey("cilium.io/v1alpha1", "TracingPolicy", None, "tp1") in snapshot
    assert snapshot[ObjectKey("cilium.io/v2", "CiliumNetworkPolicy", "b", "p")]["metadata"]["labels"] == {
        "app": "db"
    }
    async with httpx.AsyncClient(base_url=server.url) as http:
        # a namespaced kind has no cluster-level object path
        assert (await http.get("/apis/cilium.io/v2/ciliumnetworkpolicies/p")).status_code == 404


async def test_kind_not_installed_is_404_with_a_status() -> None:
    server = K8sTestServer(installed=DEFAULT_INSTALLED - {GVK("cilium.io", "v2", "CiliumCIDRGroup")})
    with server.serve():
        async with server.async_client() as client:
            with pytest.raises(ApiError) as exc:
                _ = [o async for o in client.list(CiliumCIDRGroup)]
            status = exc.value.status
            assert (status.code, status.reason) == (404, "NotFound")
            assert status.message == "the server could not find the requested resource"
            with pytest.raises(ApiError):
                await client.patch(
                    CiliumCIDRGroup,
                    "g",
                    {"apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup"},
                    patch_type=PatchType.APPLY,
                    field_manager="qcdr",
                )


async def test_server_side_apply_create_unchanged_changed(client: AsyncClient, server: K8sTestServer) -> None:
    body = tracing_policy()
    first = await apply(client, body)
    assert server.requests[-1].status_code == 201
    rv = first["metadata"]["resourceVersion"]
    assert first["metadata"]["generation"] == 1
    assert first["metadata"]["managedFields"] == [
        {
            "manager": "qcdr",
            "operation": "Apply",
            "apiVersion": "cilium.io/v1alpha1",
            "time": first["metadata"]["managedFields"][0]["time"],
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}},
                "f:spec": {"f:kprobes": {}},
            },
        }
    ]

    again = await apply(client, body)
    assert server.requests[-1].status_code == 200
    assert again["metadata"]["resourceVersion"] == rv

    body["metadata"]["labels"]["team"] = "sec"  # metadata only: new resourceVersion, same generation
    relabelled = await apply(client, body)
    assert relabelled["metadata"]["resourceVersion"] != rv
    assert relabelled["metadata"]["generation"] == 1

    body["spec"]["kprobes"][0]["call"] = "sys_read"
    changed = await apply(client, body)
    assert changed["spec"]["kprobes"][0]["call"] == "sys_read"
    assert changed["metadata"]["generation"] == 2
    assert int(changed["metadata"]["resourceVersion"]) > int(relabelled["metadata"]["resourceVersion"])


async def test_apply_removes_fields_the_manager_stopped_sending(
    client: AsyncClient, server: K8sTestServer
) -> None:
    body = tracing_policy(
        kprobes=[{"call": "sys_write"}], options=[{"name": "disable-kprobe-multi", "value": "1"}]
    )
    body["metadata"]["labels"]["team"] = "sec"
    await apply(client, body)
    # another manager adds a label of its own; it must survive qcdr's pruning
    other = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "tp", "labels": {"owner": "ops"}},
    }
    await apply(client, other, manager="ops")

    del body["spec"]["options"]
    del body["metadata"]["labels"]["team"]
    result = await apply(client, body)
    assert "options" not in result["spec"]
    assert result["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "qcdr", "owner": "ops"}
    assert server.owners("cilium.io/v1alpha1", "TracingPolicy", "tp") == {
        "qcdr (Apply)": {".metadata.labels.app.kubernetes.io/managed-by", ".spec.kprobes"},
        "ops (Apply)": {".metadata.labels.owner"},
    }


async def test_conflict_between_managers_and_force(client: AsyncClient, server: K8sTestServer) -> None:
    await apply(client, tracing_policy())
    same_value = tracing_policy()
    await apply(client, same_value, manager="other")  # same values: shared ownership, no conflict

    different = tracing_policy(kprobes=[{"call": "sys_read"}])
    with pytest.raises(ApiError) as exc:
        await apply(client, different, manager="other")
    status = exc.value.status
    assert (status.code, status.reason) == (409, "Conflict")
    assert status.message == (
        'Apply failed with 1 conflict: conflict with "qcdr" using cilium.io/v1alpha1: .spec.kprobes'
    )
    assert status.details is not None
    assert [c.field for c in status.details.causes or []] == [".spec.kprobes"]
    assert (
        server.snapshot()[ObjectKey("cilium.io/v1alpha1", "TracingPolicy", None, "tp")]["spec"]
        == (tracing_policy()["spec"])
    )

    forced = await apply(client, different, manager="other", force=True)
    assert forced["spec"]["kprobes"] == [{"call": "sys_read"}]
    owners = server.owners("cilium.io/v1alpha1", "TracingPolicy", "tp")
    assert ".spec.kprobes" in owners["other (Apply)"]
    assert ".spec.kprobes" not in owners["qcdr (Apply)"]


async def test_update_then_apply_conflicts_with_the_updater(client: AsyncClient) -> None:
    await apply(client, tracing_policy())
    await client.patch(
        TracingPolicy,
        "tp",
        {"spec": {"kprobes": [{"call": "sys_openat"}]}},
        patch_type=PatchType.MERGE,
        field_manager="kubectl-edit",
    )
    with pytest.raises(ApiError) as exc:
        await apply(client, tracing_policy())
    assert exc.value.status.code == 409
    assert '"kubectl-edit"' in (exc.value.status.message or "")


async def test_merge_patch(client: AsyncClient) -> None:
    await client.create(TracingPolicy(tracing_policy()))
    patched = await client.patch(
        TracingPolicy,
        "tp",
        {"metadata": {"labels": {"x": "1", "app.kubernetes.io/managed-by": None}}},
        patch_type=PatchType.MERGE,
    )
    assert patched["metadata"]["labels"] == {"x": "1"}
    with pytest.raises(ApiError) as exc:  # custom resources have no strategic merge patch
        await client.patch(TracingPolicy, "tp", {"spec": {}}, patch_type=PatchType.STRATEGIC)
    assert exc.value.status.code == 415


async def test_invalid_bodies_are_422(strict_server: K8sTestServer) -> None:
    async with strict_server.async_client() as client:
        bad = tracing_policy(kprobes=[{"call": "sys_write", "sycall": True}])
        with pytest.raises(ApiError) as exc:
            await apply(client, bad)
        status = exc.value.status
        assert (status.code, status.reason) == (422, "Invalid")
        assert (
            status.message
            == 'TracingPolicy.cilium.io "tp" is invalid: [spec.kprobes[0].sycall: unknown field "sycall"]'
        )
        assert status.details is not None
        assert [c.field for c in status.details.causes or []] == ["spec.kprobes[0].sycall"]
        with pytest.raises(ApiError) as exc:
            await client.create(TracingPolicy(bad))
        assert exc.value.status.code == 422
        with pytest.raises(ApiError) as exc:
            await client.create(
                ConfigMap(metadata=ObjectMeta(name="c", namespace="default", labels={"a": "b c"}))
            )
        assert exc.value.status.code == 422
        assert strict_server.snapshot().keys() == {
            ObjectKey("v1", "Namespace", None, "default"),
            ObjectKey("v1", "Namespace", None, "kube-system"),
        }
        # invalid beats conflict: the request is reported as invalid
        await apply(client, tracing_policy())
        with pytest.raises(ApiError) as exc:
            await apply(client, tracing_policy(kprobes=[{"call": 5}]), manager="other")
        assert exc.value.status.code == 422


async def test_dry_run(client: AsyncClient, server: K8sTestServer) -> None:
    preview = await apply(client, tracing_policy(), dry_run=True)
    assert preview["metadata"]["name"] == "tp"
    assert server.objects("TracingPolicy") == {}
    assert server.requests[-1].query["dryRun"] == "All"

    stored = await apply(client, tracing_policy())
    changed = await apply(client, tracing_policy(kprobes=[{"call": "sys_read"}]), dry_run=True)
    assert changed["spec"]["kprobes"] == [{"call": "sys_read"}]
    assert changed["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert server.objects("TracingPolicy")[(None, "tp")]["spec"] == tracing_policy()["spec"]
    await client.delete(TracingPolicy, "tp", dry_run=True)
    assert (None, "tp") in server.objects("TracingPolicy")


async def test_apply_requires_a_field_manager(server: K8sTestServer, client: AsyncClient) -> None:
    with pytest.raises(ValueError, match="field_manager"):  # lightkube refuses before sending
        await client.patch(TracingPolicy, "tp", tracing_policy(), patch_type=PatchType.APPLY)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.patch(
            "/apis/cilium.io/v1alpha1/tracingpolicies/tp",
            content=b"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: tp}\n",
            headers={"content-type": "application/apply-patch+yaml"},
        )
        assert response.status_code == 422
        assert "fieldManager: Required value" in response.json()["message"]
        response = await http.patch(
            "/apis/cilium.io/v1alpha1/tracingpolicies/tp?fieldManager=yaml-user",
            content=b"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: tp}\nspec: {}\n",
            headers={"content-type": "application/apply-patch+yaml"},
        )
        assert response.status_code == 201
        response = await http.patch(
            "/apis/cilium.io/v1alpha1/tracingpolicies/tp?fieldManager=yaml-user",
            content=b'{"apiVersion": "cilium.io/v1alpha1", "kind": "TracingPolicy", '
            b'"metadata": {"name": "other"}}',
            headers={"content-type": "application/apply-patch+yaml"},
        )
        assert response.status_code == 400  # name in the body differs from the URL


async def test_required_namespaces() -> None:
    server = K8sTestServer(require_namespaces=True)
    with server.serve():
        async with server.async_client() as client:
            with pytest.raises(ApiError) as exc:
                await client.create(CiliumNetworkPolicy(cnp("p", "shop")))
            assert exc.value.status.message == 'namespaces "shop" not found'
            await client.create(Namespace(metadata=ObjectMeta(name="shop")))
            await client.create(CiliumNetworkPolicy(cnp("p", "shop")))


def test_sync_client_and_kubeconfig_file(server: K8sTestServer, tmp_path: Path) -> None:
    from lightkube import Client, KubeConfig

    with server.client() as sync:
        sync.create(ConfigMap(metadata=ObjectMeta(name="s", namespace="default")))
    path = server.write_kubeconfig(tmp_path / "kubeconfig")
    with Client(config=KubeConfig.from_file(path), trust_env=False) as from_file:
        assert [c.metadata.name for c in from_file.list(ConfigMap)] == ["s"]
    assert server.requests[-1].path == "/api/v1/namespaces/default/configmaps"


def test_field_ownership_rules() -> None:
    from qcdr_common.testing.k8s import fields

    a, b = ("a", "Apply"), ("b", "Apply")
    current = {"spec": {"x": {"one": 1}}}
    owners = {a: {("spec", "x", "one")}}
    # maps are granular; an atomic value (a list) replacing a map someone else fills is a conflict
    assert fields.find_conflicts(current, fields.leaves({"spec": {"x": {"two": 2}}}), owners, b) == []
    assert fields.find_conflicts(current, fields.leaves({"spec": {"x": {}}}), owners, b) == []
    assert fields.find_conflicts(current, fields.leaves({"spec": {"x": [1]}}), owners, b) == [
        fields.Conflict(a, ("spec", "x", "one"))
    ]
    merged, owners, _ = fields.apply(current, {"spec": {"x": {"two": 2}}}, owners, b, force=False)
    assert merged == {"spec": {"x": {"one": 1, "two": 2}}}
    # a manager that stops sending its fields removes them, and the maps left empty
    merged, owners, _ = fields.apply(merged, {}, owners, a, force=False)
    assert merged == {"spec": {"x": {"two": 2}}}
    merged, owners, _ = fields.apply(merged, {}, owners, b, force=False)
    assert (merged, owners) == ({}, {})
    assert fields.to_fields_v1({("spec",), ("spec", "a")}) == {"f:spec": {".": {}, "f:a": {}}}


# --------------------------------------------------------------------------- nodes, apps, subresources

APPS = {
    GVK("", "v1", "Node"),
    GVK("apps", "v1", "Deployment"),
    GVK("apps", "v1", "ReplicaSet"),
    GVK("apps", "v1", "StatefulSet"),
    GVK("apps", "v1", "DaemonSet"),
    GVK("policy", "v1", "PodDisruptionBudget"),
}


@pytest.fixture
def apps_server() -> Iterator[K8sTestServer]:
    srv = K8sTestServer(installed=DEFAULT_INSTALLED | APPS)
    with srv.serve():
        yield srv


def pod(name: str, labels: dict[str, str] | None = None, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/web:1"}]},
    }


def deployment(name: str = "web", replicas: int | None = 3, kind: str = "Deployment") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
        },
        "template": {
            "metadata": {"labels": {"app": "web", "tier": "a"}},
            "spec": {"containers": [{"name": "c", "image": "registry.example/web:1"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def pdb(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
    }


def test_discovery_lists_subresources_as_the_api_server_does(apps_server: K8sTestServer) -> None:
    with httpx.Client(base_url=apps_server.url) as http:
        core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
        assert core["nodes"]["namespaced"] is False
        assert core["pods/eviction"] == {
            "name": "pods/eviction",
            "singularName": "",
            "namespaced": True,
            "group": "policy",
            "version": "v1",
            "kind": "Eviction",
            "verbs": ["create"],
        }
        apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
        assert set(apps) == {
            "daemonsets",
            "deployments",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
        }
        for name in ("deployments/scale", "replicasets/scale", "statefulsets/scale"):
            assert (apps[name]["group"], apps[name]["version"], apps[name]["kind"]) == (
                "autoscaling",
                "v1",
                "Scale",
            )
            assert apps[name]["verbs"] == ["get", "patch", "update"]
        assert http.get("/apis/policy/v1").json()["resources"][0]["name"] == "poddisruptionbudgets"
        # no such subresource, and none on a kind without it
        assert http.get("/apis/apps/v1/namespaces/default/daemonsets/x/scale").status_code == 404
        assert http.get("/apis/apps/v1/namespaces/default/deployments/x/status").status_code == 404
        assert http.get("/api/v1/nodes/n/eviction").status_code == 404


async def test_nodes_are_cluster_scoped(apps_server: K8sTestServer) -> None:
    from lightkube.resources.core_v1 import Node

    async with apps_server.async_client() as client:
        await client.create(Node(metadata=ObjectMeta(name="node-1", labels={"zone": "a"})))
        cordoned = await client.patch(
            Node,
            "node-1",
            {"spec": {"unschedulable": True}},
            patch_type=PatchType.MERGE,
            field_manager="qcdr",
        )
        assert cordoned.spec is not None
        assert cordoned.spec.unschedulable is True
        assert [n.metadata.name async for n in client.list(Node)] == ["node-1"]
    assert apps_server.requests[-2].path == "/api/v1/nodes/node-1"
    assert apps_server.objects("Node")[(None, "node-1")]["spec"] == {"unschedulable": True}


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "StatefulSet"])
async def test_scale_subresource(apps_server: K8sTestServer, kind: str) -> None:
    from lightkube.resources import apps_v1

    res = getattr(apps_v1, kind)
    owner = apps_server.seed(deployment(kind=kind))
    async with apps_server.async_client() as client:
        scale = await client.get(res.Scale, "web", namespace="default")
        assert scale.spec.replicas == 3
        assert scale.status.selector == "app=web,tier in (a,b)"
        assert scale.metadata.uid == owner["metadata"]["uid"]
        assert scale.metadata.resourceVersion == owner["metadata"]["resourceVersion"]
        assert apps_server.requests[-1].path == f"/apis/apps/v1/namespaces/default/{kind.lower()}s/web/scale"

        preview = await client.patch(
            res.Scale, "web", {"spec": {"replicas": 0}}, patch_type=PatchType.MERGE, dry_run=True
        )
        assert preview.spec.replicas == 0
        assert apps_server.objects(kind)[("default", "web")]["spec"]["replicas"] == 3

        zero = await client.patch(
            res.Scale,
            "web",
            {"metadata": {"resourceVersion": scale.metadata.resourceVersion}, "spec": {"replicas": 0}},
            patch_type=PatchType.MERGE,
            field_manager="qcdr",
        )
        assert zero.spec.replicas == 0
        stored = apps_server.objects(kind)[("default", "web")]
        assert stored["spec"]["replicas"] == 0
        assert stored["metadata"]["generation"] == 2
        assert ".spec.replicas" in apps_server.owners("apps/v1", kind, "web", "default")["qcdr (Update)"]

        with pytest.raises(ApiError) as exc:  # the resourceVersion read before the change is stale now
            await client.patch(
                res.Scale,
                "web",
                {"metadata": {"resourceVersion": scale.metadata.resourceVersion}, "spec": {"replicas": 2}},
                patch_type=PatchType.MERGE,
            )
        assert exc.value.status.code == 409
        zero.spec.replicas = 2
        replaced = await client.replace(zero, "web", namespace="default")
        assert replaced.spec.replicas == 2
        assert apps_server.requests[-1].method == "PUT"
        with pytest.raises(ApiError) as exc:
            await client.patch(res.Scale, "web", {"spec": {"replicas": -1}}, patch_type=PatchType.MERGE)
        assert (exc.value.status.code, exc.value.status.reason) == (422, "Invalid")
        assert "spec.replicas" in (exc.value.status.message or "")
        with pytest.raises(ApiError) as exc:
            await client.patch(res.Scale, "web", [{"op": "replace"}], patch_type=PatchType.JSON)
        assert exc.value.status.code == 415
        with pytest.raises(ApiError) as exc:
            await client.get(res.Scale, "missing", namespace="default")
        assert exc.value.status.message == f'{kind.lower()}s.apps "missing" not found'


async def test_scale_defaults_replicas_to_one(apps_server: K8sTestServer) -> None:
    from lightkube.resources.apps_v1 import Deployment

    apps_server.seed(deployment(replicas=None))
    async with apps_server.async_client() as client:
        assert (await client.get(Deployment.Scale, "web", namespace="default")).spec.replicas == 1


async def test_eviction(apps_server: K8sTestServer) -> None:
    from lightkube.models.meta_v1 import DeleteOptions, Preconditions
    from lightkube.resources.core_v1 import Pod

    uid = apps_server.seed(pod("a"))["metadata"]["uid"]

    def eviction(name: str, precondition: str | None = None) -> Any:
        options = DeleteOptions(preconditions=Preconditions(uid=precondition)) if precondition else None
        return Pod.Eviction(metadata=ObjectMeta(name=name, namespace="default"), deleteOptions=options)

    async with apps_server.async_client() as client:
        await client.create(eviction("a", uid), "a", dry_run=True)
        record = apps_server.requests[-1]
        assert (record.method, record.path, record.query) == (
            "POST",
            "/api/v1/namespaces/default/pods/a/eviction",
            {"dryRun": "All"},
        )
        assert record.status_code == 201
        assert ("default", "a") in apps_server.objects("Pod")

        with pytest.raises(ApiError) as exc:
            await client.create(eviction("a", "00000000-0000-0000-0000-000000000000"), "a")
        assert exc.value.status.code == 409
        assert "Precondition failed: UID in precondition" in (exc.value.status.message or "")
        with pytest.raises(ApiError) as exc:
            await client.create(eviction("b"), "a")
        assert exc.value.status.message == "name in URL does not match name in Eviction object"

        await client.create(eviction("a", uid), "a")
        assert apps_server.objects("Pod") == {}
        with pytest.raises(ApiError) as exc:
            await client.create(eviction("a"), "a")
        assert (exc.value.status.code, exc.value.status.message) == (404, 'pods "a" not found')
    async with httpx.AsyncClient(base_url=apps_server.url) as http:
        response = await http.get("/api/v1/namespaces/default/pods/a/eviction")
        assert response.status_code == 405


async def test_eviction_honours_disruption_budgets(apps_server: K8sTestServer) -> None:
    from lightkube.resources.core_v1 import Pod

    for name in ("a", "b"):
        apps_server.seed(pod(name))
    apps_server.seed(pod("other", {"app": "db"}))
    apps_server.seed(pdb("web", minAvailable=2))

    async def evict(name: str, **kwargs: Any) -> None:
        async with apps_server.async_client() as client:
            await client.create(
                Pod.Eviction(metadata=ObjectMeta(name=name, namespace="default")), name, **kwargs
            )

    for dry_run in (True, False):
        with pytest.raises(ApiError) as exc:
            await evict("a", dry_run=dry_run)
        status = exc.value.status
        assert (status.code, status.reason) == (429, "TooManyRequests")
        assert status.message == "Cannot evict pod as it would violate the pod's disruption budget."
        assert status.details is not None
        assert [c.message for c in status.details.causes or []] == [
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        ]
    await evict("other")  # no budget selects it
    apps_server.seed(pdb("web-2", maxUnavailable="50%"))
    with pytest.raises(ApiError) as exc:
        await evict("a")
    assert exc.value.status.code == 500
    assert "more than one PodDisruptionBudget" in (exc.value.status.message or "")


async def test_uid_precondition_on_updates(apps_server: K8sTestServer) -> None:
    from lightkube.resources.core_v1 import Pod

    uid = apps_server.seed(pod("a"))["metadata"]["uid"]
    async with apps_server.async_client() as client:
        patch = {"metadata": {"uid": uid, "labels": {"x": "1"}}}
        labelled = await client.patch(Pod, "a", patch, patch_type=PatchType.MERGE)
        assert labelled.metadata.labels == {"app": "web", "x": "1"}
        with pytest.raises(ApiError) as exc:
            await client.patch(
                Pod, "a", {"metadata": {"uid": "other", "labels": {"x": "2"}}}, patch_type=PatchType.MERGE
            )
        assert exc.value.status.code == 409
        assert exc.value.status.message == (
            f'Operation cannot be fulfilled on pods "a": Precondition failed: UID in precondition: other, '
            f"UID in object meta: {uid}"
        )
    assert apps_server.objects("Pod")[("default", "a")]["metadata"]["labels"]["x"] == "1"


def test_label_selector_objects() -> None:
    from qcdr_common.testing.k8s.selectors import from_label_selector, selector_string

    reqs = from_label_selector(
        {
            "matchLabels": {"b": "1"},
            "matchExpressions": [
                {"key": "a", "operator": "NotIn", "values": ["x"]},
                {"key": "c", "operator": "Exists"},
                {"key": "d", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector_string(reqs) == "a notin (x),b=1,c,!d"
    assert all(r.matches({"b": "1", "c": ""}) for r in reqs)
    assert not all(r.matches({"a": "x", "b": "1", "c": ""}) for r in reqs)
    assert from_label_selector({}) == []  # an empty selector selects everything
    with pytest.raises(ValueError, match="values must be non-empty"):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
    with pytest.raises(ValueError, match="not a valid label selector operator"):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "Gt"}]})


async def test_eviction_allowed_by_a_budget(apps_server: K8sTestServer) -> None:
    from lightkube.resources.core_v1 import Pod

    for name in ("a", "b"):
        apps_server.seed(pod(name))
    # an integer minAvailable counts the pods (as the disruption controller does)
    apps_server.seed(pdb("web", minAvailable=1))
    async with apps_server.async_client() as client:
        await client.create(Pod.Eviction(metadata=ObjectMeta(name="a", namespace="default")), "a")
        # one pod left, and the budget needs one: refused now
        with pytest.raises(ApiError) as exc:
            await client.create(Pod.Eviction(metadata=ObjectMeta(name="b", namespace="default")), "b")
        assert exc.value.status.code == 429
    assert set(apps_server.objects("Pod")) == {("default", "b")}
