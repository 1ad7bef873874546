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
        assert core == {"configmaps": True, "namespaces": False, "pods": True}
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
