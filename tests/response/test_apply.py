"""apply_documents: server-side apply and pruning against the Kubernetes API test server."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType
from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_common.testing.k8s_server import DEFAULT_INSTALLED, GVK, K8sTestServer, ObjectKey
from qcdr_common.testing.plugin import shared_dir
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.policies.apply import (
    ApplyReport,
    KubeConfigError,
    ObjectRef,
    apply_documents,
    load_client,
    resource_for,
)

MANAGED = {"app.kubernetes.io/managed-by": "qcdr"}
TP = "cilium.io/v1alpha1"
CILIUM = "cilium.io/v2"


def make_doc(body: dict[str, Any], family: str = "test") -> PolicyDocument:
    return PolicyDocument(family=family, filename=f"{body['metadata']['name']}.yaml", body=body)


def tracing_policy(
    name: str, call: str = "sys_write", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": TP,
        "kind": "TracingPolicy",
        "metadata": {"name": name, "labels": dict(MANAGED if labels is None else labels)},
        "spec": {"kprobes": [{"call": call, "syscall": True, "args": [{"index": 0, "type": "int"}]}]},
    }


def ccnp(name: str, cidr: str = "203.0.113.0/24") -> dict[str, Any]:
    return {
        "apiVersion": CILIUM,
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": name, "labels": dict(MANAGED)},
        "spec": {"endpointSelector": {}, "egressDeny": [{"toCIDRSet": [{"cidr": cidr}]}]},
    }


def cnp(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": CILIUM,
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED)},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "ingressDeny": [{"fromEntities": ["world"]}],
        },
    }


def refs(items: list[ObjectRef]) -> list[str]:
    return sorted(str(r) for r in items)


def optional_validator() -> ManifestValidator | None:
    """Strict validation when ../shared is here; the apply logic is tested either way."""
    path = shared_dir()
    return ManifestValidator(path) if path is not None and (path / "schemas").is_dir() else None


@pytest.fixture
def server() -> Iterator[K8sTestServer]:
    srv = K8sTestServer(validator=optional_validator())
    with srv.serve():
        yield srv


@pytest.fixture
async def client(server: K8sTestServer) -> AsyncIterator[AsyncClient]:
    async with server.async_client() as c:
        yield c


async def test_apply_reapply_and_prune(server: K8sTestServer, client: AsyncClient) -> None:
    docs = [make_doc(tracing_policy("tp-a")), make_doc(ccnp("deny-c2")), make_doc(cnp("deny-world", "shop"))]
    report = await apply_documents(docs, client)
    assert report.ok, report.failed
    assert refs(report.created) == [
        "CiliumClusterwideNetworkPolicy/deny-c2",
        "CiliumNetworkPolicy/shop/deny-world",
        "TracingPolicy/tp-a",
    ]
    assert report.configured == report.unchanged == report.pruned == []
    stored = server.snapshot()[ObjectKey(TP, "TracingPolicy", None, "tp-a")]
    assert stored["metadata"]["managedFields"][0]["manager"] == "qcdr"
    assert report.summary() == "3 created, 0 configured, 0 unchanged, 0 pruned, 0 failed"

    again = await apply_documents(docs, client)
    assert again.ok
    assert len(again.unchanged) == 3
    assert again.created == again.configured == again.pruned == []

    changed = [make_doc(tracing_policy("tp-a", call="sys_read")), docs[1], docs[2]]
    report = await apply_documents(changed, client)
    assert refs(report.configured) == ["TracingPolicy/tp-a"]
    assert len(report.unchanged) == 2

    report = await apply_documents([docs[0]], client)
    assert refs(report.configured) == ["TracingPolicy/tp-a"]
    assert refs(report.pruned) == [
        "CiliumClusterwideNetworkPolicy/deny-c2",
        "CiliumNetworkPolicy/shop/deny-world",
    ]
    assert set(server.objects("TracingPolicy")) == {(None, "tp-a")}
    assert server.objects("CiliumClusterwideNetworkPolicy") == {}
    assert server.objects("CiliumNetworkPolicy") == {}


async def test_objects_without_the_managed_labels_are_never_pruned(
    server: K8sTestServer, client: AsyncClient
) -> None:
    server.seed(tracing_policy("hand-made", labels={"team": "sec"}))
    server.seed(tracing_policy("other-tool", labels={"app.kubernetes.io/managed-by": "helm"}))
    server.seed(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "shop", "labels": MANAGED},
        }
    )
    report = await apply_documents([make_doc(tracing_policy("tp-a"))], client)
    assert report.ok
    assert report.pruned == []
    assert set(server.objects("TracingPolicy")) == {(None, "hand-made"), (None, "other-tool"), (None, "tp-a")}
    assert set(server.objects("ConfigMap")) == {("shop", "c")}  # built-in kinds are never pruned

    report = await apply_documents([], client)
    assert refs(report.pruned) == ["TracingPolicy/tp-a"]
    assert set(server.objects("TracingPolicy")) == {(None, "hand-made"), (None, "other-tool")}


async def test_conflict_is_reported_and_does_not_stop_the_others(
    server: K8sTestServer, client: AsyncClient
) -> None:
    # someone else owns the spec of tp-b with a different value
    await client.patch(
        resource_for(TP, "TracingPolicy"),
        "tp-b",
        tracing_policy("tp-b", call="sys_openat"),
        patch_type=PatchType.APPLY,
        field_manager="ops",
    )
    docs = [make_doc(tracing_policy("tp-a")), make_doc(tracing_policy("tp-b")), make_doc(ccnp("deny-c2"))]
    report = await apply_documents(docs, client)
    assert not report.ok
    assert [(str(f.ref), f.code, f.reason) for f in report.failed] == [
        ("TracingPolicy/tp-b", 409, "Conflict")
    ]
    assert 'conflict with "ops"' in report.failed[0].message
    assert refs(report.created) == ["CiliumClusterwideNetworkPolicy/deny-c2", "TracingPolicy/tp-a"]
    assert any("TracingPolicy: not pruned" in w for w in report.warnings)

    forced = await apply_documents(docs, client, force=True)
    assert forced.ok
    assert refs(forced.configured) == ["TracingPolicy/tp-b"]
    spec = server.objects("TracingPolicy")[(None, "tp-b")]["spec"]
    assert spec["kprobes"][0]["call"] == "sys_write"


async def test_a_failed_kind_is_not_pruned(
    shared_path: Path, server: K8sTestServer, client: AsyncClient
) -> None:  # needs the validator: the failure is a 422 from strict validation
    await apply_documents([make_doc(tracing_policy("old-name")), make_doc(ccnp("old-ccnp"))], client)
    bad = tracing_policy("new-name")
    bad["spec"]["kprobes"][0]["sycall"] = True  # 422 from strict validation
    report = await apply_documents([make_doc(bad), make_doc(ccnp("new-ccnp"))], client)
    assert [(str(f.ref), f.code) for f in report.failed] == [("TracingPolicy/new-name", 422)]
    assert 'unknown field "sycall"' in report.failed[0].message
    # the renamed TracingPolicy failed, so the old one stays; the CCNP kind is pruned as usual
    assert refs(report.pruned) == ["CiliumClusterwideNetworkPolicy/old-ccnp"]
    assert set(server.objects("TracingPolicy")) == {(None, "old-name")}


async def test_a_failed_cidr_group_is_not_pruned_through_its_other_version(
    shared_path: Path, server: K8sTestServer, client: AsyncClient
) -> None:
    """CiliumCIDRGroup is managed at v2 and v2alpha1 (one CRD, two versions): a new group that
    failed at v2 held back only the v2 listing, and the v2alpha1 one deleted the old group."""

    def group(name: str, **extra: Any) -> dict[str, Any]:
        meta = {"name": name, "labels": dict(MANAGED)}
        return {"apiVersion": CILIUM, "kind": "CiliumCIDRGroup", "metadata": meta, "spec": extra}

    await apply_documents([make_doc(group("old-group", externalCIDRs=["203.0.113.7/32"]))], client)
    bad = group("new-group", externalCIDRs=["203.0.113.7/32"], unknownField=True)  # 422
    report = await apply_documents([make_doc(bad)], client)
    assert [(str(f.ref), f.code) for f in report.failed] == [("CiliumCIDRGroup/new-group", 422)]
    assert report.pruned == []
    assert set(server.objects("CiliumCIDRGroup")) == {(None, "old-group")}
    assert [w for w in report.warnings if "not pruned" in w] == [
        "CiliumCIDRGroup: not pruned because some of its documents failed to apply"
    ]


async def test_kind_not_installed() -> None:
    server = K8sTestServer(
        installed=DEFAULT_INSTALLED - {GVK("cilium.io", "v2", "CiliumCIDRGroup")},
        validator=optional_validator(),
    )
    group = {
        "apiVersion": CILIUM,
        "kind": "CiliumCIDRGroup",
        "metadata": {"name": "bad-ips", "labels": dict(MANAGED)},
        "spec": {"externalCIDRs": ["192.0.2.0/24"]},
    }
    with server.serve():
        async with server.async_client() as client:
            report = await apply_documents([make_doc(group), make_doc(tracing_policy("tp-a"))], client)
            assert refs(report.created) == ["TracingPolicy/tp-a"]
            assert len(report.failed) == 1
            failure = report.failed[0]
            assert (str(failure.ref), failure.code, failure.reason) == (
                "CiliumCIDRGroup/bad-ips",
                404,
                "NotFound",
            )
            assert "installed" in failure.message

            report = await apply_documents([make_doc(tracing_policy("tp-a"))], client)
            assert report.ok
            assert "CiliumCIDRGroup (cilium.io/v2) is not installed: nothing to prune" in report.warnings


async def test_dry_run_changes_nothing(server: K8sTestServer, client: AsyncClient) -> None:
    await apply_documents([make_doc(tracing_policy("keep")), make_doc(tracing_policy("gone"))], client)
    before = server.snapshot()
    docs = [make_doc(tracing_policy("keep", call="sys_read")), make_doc(ccnp("new"))]
    report = await apply_documents(docs, client, dry_run=True)
    assert report.ok
    assert report.dry_run
    assert refs(report.created) == ["CiliumClusterwideNetworkPolicy/new"]
    assert refs(report.configured) == ["TracingPolicy/keep"]
    assert refs(report.pruned) == ["TracingPolicy/gone"]
    assert report.summary().endswith("(dry run)")
    assert server.snapshot() == before

    unchanged = await apply_documents(
        [make_doc(tracing_policy("keep")), make_doc(tracing_policy("gone"))], client, dry_run=True
    )
    assert len(unchanged.unchanged) == 2


async def test_core_kinds_duplicates_and_warnings(server: K8sTestServer, client: AsyncClient) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "qcdr", "labels": dict(MANAGED)},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "qcdr"},
        "data": {"a": "b"},
    }
    docs = [
        make_doc(config),
        make_doc(namespace),
        make_doc(tracing_policy("tp")),
        make_doc(tracing_policy("tp")),
    ]
    report = await apply_documents(docs, client)
    assert refs(report.created) == ["ConfigMap/qcdr/c", "Namespace/qcdr", "TracingPolicy/tp"]
    assert [(str(f.ref), f.message) for f in report.failed] == [
        ("TracingPolicy/tp", "the same object appears in more than one document")
    ]
    assert any(w.startswith("ConfigMap/qcdr/c lacks the managed labels") for w in report.warnings)
    cm = [c async for c in client.list(ConfigMap, namespace="qcdr")]
    assert cm[0].data == {"a": "b"}

    report = await apply_documents([], client, managed_selector={})
    assert report.pruned == []
    assert any("pruning skipped" in w for w in report.warnings)
    assert isinstance(report, ApplyReport)


async def test_documents_are_unchanged_by_apply(client: AsyncClient) -> None:
    body = tracing_policy("tp")
    doc = make_doc(body)
    original = copy.deepcopy(doc.body)
    await apply_documents([doc], client)
    assert doc.body == original


async def test_load_client_from_kubeconfig(
    server: K8sTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = server.write_kubeconfig(tmp_path / "config")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    async with load_client(path) as client:
        report = await apply_documents([make_doc(tracing_policy("tp"))], client)
        assert refs(report.created) == ["TracingPolicy/tp"]
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")
    async with load_client(None) as client:
        assert client.namespace == "default"


def test_load_client_without_any_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubeConfigError) as exc:
        load_client(None, service_account=tmp_path / "no-sa")
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith("no Kubernetes configuration")

    (tmp_path / "broken").write_text("clusters: []\ncontexts: []\ncurrent-context: nope\n")
    broken = tmp_path / "broken"
    with pytest.raises(KubeConfigError) as exc:
        load_client(broken)
    assert str(exc.value) == f"invalid Kubernetes configuration ({broken}): Context 'nope' not found"
    with pytest.raises(KubeConfigError, match="not found"):
        load_client(tmp_path / "absent")
    # a binary file: the file is named, not only a byte position (found by the bad-input audit)
    (tmp_path / "binary").write_bytes(b"\xca\xfe\x00")
    with pytest.raises(KubeConfigError) as exc:
        load_client(tmp_path / "binary")
    assert (
        str(exc.value) == f"invalid Kubernetes configuration ({tmp_path / 'binary'}): not UTF-8 text (byte 0)"
    )


async def test_prune_ignores_the_version_of_a_multi_version_crd(tmp_path: Path, shared_path: Path) -> None:
    """CiliumCIDRGroup is served as v2alpha1 and v2: applying v2 must not prune via the v2alpha1 listing."""
    from qcdr_common.testing.k8s_server import K8sTestServer
    from qcdr_common.testing.schemas import ManifestValidator

    server = K8sTestServer(validator=ManifestValidator(shared_path))
    group = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumCIDRGroup",
        "metadata": {"name": "g1", "labels": {"app.kubernetes.io/managed-by": "qcdr"}},
        "spec": {"externalCIDRs": ["45.9.148.0/24"]},
    }
    with server.serve():
        async with server.async_client() as client:
            report = await apply_documents(
                [PolicyDocument(family="t", filename="f.yaml", body=group)], client
            )
    assert report.ok, report.summary()
    assert not report.pruned
    assert (None, "g1") in server.objects("CiliumCIDRGroup")
