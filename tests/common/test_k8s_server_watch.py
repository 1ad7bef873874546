"""The Kubernetes API test server's watches, custom kinds from CRDs and their ``/status`` subresource,
driven through a real lightkube AsyncClient (and raw HTTP where lightkube hides the wire)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType
from qcdr_common.testing.k8s_server import K8sTestServer, crd_resource_type

REPO = Path(__file__).resolve().parents[2]
GROUP = "federation.qualys.com"

FederatedCluster = create_global_resource(GROUP, "v1alpha1", "FederatedCluster", "federatedclusters")
Widget = create_namespaced_resource("example.qcdr.io", "v1", "Widget", "widgets")


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


CLUSTER_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"federatedclusters.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {"kind": "FederatedCluster", "plural": "federatedclusters", "shortNames": ["fc"]},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "apiVersion": _string(),
                            "kind": _string(),
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "labels": {"type": "object", "additionalProperties": _string()},
                                    "region": _string(maxLength=63),
                                    "provider": _string(enum=["aws", "gcp", "azure"]),
                                    "paused": {"type": "boolean", "default": False},
                                    "bootstrapTokenSecretRef": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {
                                            "name": _string(),
                                            "key": _string(default="token"),
                                        },
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "state": _string(enum=["pending", "healthy", "offline"]),
                                    "nodeCount": {"type": "integer", "format": "int64", "minimum": 0},
                                    "lastHeartbeat": _string(format="date-time"),
                                    "message": _string(nullable=True),
                                    "observedGeneration": {"type": "integer"},
                                    "conditions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["type", "status"],
                                            "properties": {
                                                "type": _string(),
                                                "status": _string(enum=["True", "False", "Unknown"]),
                                                "reason": _string(),
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.qcdr.io"},
    "spec": {
        "group": "example.qcdr.io",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                # no status subresource: status is written with the object
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "properties": {"phase": _string()}},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def server() -> Iterator[K8sTestServer]:
    srv = K8sTestServer.from_crds([CLUSTER_CRD, WIDGET_CRD])
    with srv.serve():
        yield srv


@pytest.fixture
async def client(server: K8sTestServer) -> AsyncIterator[AsyncClient]:
    async with server.async_client() as c:
        yield c


def cluster(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "FederatedCluster",
        "metadata": {"name": name},
        "spec": spec or {"region": "us-east-1", "provider": "aws"},
    }


def config_map(name: str, labels: dict[str, str] | None = None, **data: str) -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name=name, namespace="default", labels=labels), data=data or None)


class Events:
    """Collects (type, name, resourceVersion) from a lightkube watch in a background task."""

    def __init__(self, stream: AsyncIterable[tuple[str, Any]]) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterable[tuple[str, Any]]) -> None:
        try:
            async for kind, obj in stream:
                meta = obj.metadata if not isinstance(obj, dict) else obj["metadata"]
                name = meta.name if not isinstance(meta, dict) else meta.get("name", "")
                rv = meta.resourceVersion if not isinstance(meta, dict) else meta["resourceVersion"]
                self.seen.append((kind, name or "", rv))
        except BaseException as exc:  # kept: ``until`` stops waiting, the test sees it
            self.error = exc

    async def until(self, count: int, within_s: float = 30.0) -> list[tuple[str, str, str]]:
        deadline = time.monotonic() + within_s
        while len(self.seen) < count and self.error is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.seen} after {within_s} s, wanted {count} events")
            await asyncio.sleep(0.01)
        return self.seen

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def kinds_and_names(seen: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name, _ in seen]


# --------------------------------------------------------------------------- watches


async def test_list_then_watch_from_its_version_sees_changes_in_order(
    server: K8sTestServer, client: AsyncClient
) -> None:
    await client.create(config_map("before"))
    listing = client.list(ConfigMap, namespace="default")
    assert [cm.metadata.name async for cm in listing] == ["before"]
    rv = listing.resourceVersion
    assert rv == server.resource_version

    events = Events(client.watch(ConfigMap, namespace="default", resource_version=rv))
    created = await client.create(config_map("a", x="1"))
    modified = await client.patch(ConfigMap, "a", {"data": {"x": "2"}}, namespace="default")
    await client.delete(ConfigMap, "a", namespace="default")
    await client.create(ConfigMap(metadata=ObjectMeta(name="elsewhere", namespace="kube-system")))
    seen = await events.until(3)
    await events.stop()
    assert kinds_and_names(seen) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    versions = [int(v) for _, _, v in seen]
    assert versions == sorted(set(versions))
    assert seen[0][2] == created.metadata.resourceVersion
    assert seen[1][2] == modified.metadata.resourceVersion
    assert int(seen[2][2]) > int(modified.metadata.resourceVersion)  # the deletion's own version
    assert int(server.resource_version) == int(seen[2][2]) + 1  # then the kube-system one


async def test_watch_without_a_version_starts_with_the_current_objects(
    server: K8sTestServer, client: AsyncClient
) -> None:
    for name in ("a", "b"):
        await client.create(config_map(name))
    events = Events(client.watch(ConfigMap, namespace="default"))
    await events.until(2)
    await server.wait_for_watches(1)
    await client.create(config_map("c"))
    # a change from another thread (no HTTP) wakes the watch as well
    server.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d", "namespace": "default"}})
    seen = await events.until(4)
    await events.stop()
    assert kinds_and_names(seen) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("ADDED", "d")]


async def test_every_namespace_and_a_resource_version_of_zero(client: AsyncClient) -> None:
    await client.create(config_map("a"))
    await client.create(ConfigMap(metadata=ObjectMeta(name="b", namespace="kube-system")))
    events = Events(client.watch(ConfigMap, namespace=ALL_NS, resource_version="0"))
    seen = await events.until(2)
    await events.stop()
    assert sorted(kinds_and_names(seen)) == [("ADDED", "a"), ("ADDED", "b")]


async def test_a_version_older_than_the_history_is_410_expired(client: AsyncClient) -> None:
    server = K8sTestServer(watch_history=3)
    with server.serve():
        async with server.async_client() as small:
            start = server.resource_version
            for i in range(5):
                await small.create(config_map(f"cm-{i}"))
            with pytest.raises(ApiError) as exc:
                async for _ in small.watch(ConfigMap, namespace="default", resource_version=start):
                    pass
            assert (exc.value.status.code, exc.value.status.reason) == (410, "Expired")
            assert f"too old resource version: {start}" in (exc.value.status.message or "")
            # the three kept changes can still be watched
            kept = str(int(server.resource_version) - 3)
            events = Events(small.watch(ConfigMap, namespace="default", resource_version=kept))
            assert kinds_and_names(await events.until(3)) == [("ADDED", f"cm-{i}") for i in (2, 3, 4)]
            await events.stop()


async def test_compact_expires_every_earlier_version(server: K8sTestServer, client: AsyncClient) -> None:
    await client.create(config_map("a"))
    listing = client.list(ConfigMap, namespace="default")
    _ = [cm async for cm in listing]
    await client.create(config_map("b"))
    server.compact()
    with pytest.raises(ApiError) as exc:
        async for _ in client.watch(ConfigMap, namespace="default", resource_version=listing.resourceVersion):
            pass
    assert exc.value.status.code == 410
    # the current version is still fine: nothing happened after it
    events = Events(client.watch(ConfigMap, namespace="default", resource_version=server.resource_version))
    await client.create(config_map("c"))
    assert kinds_and_names(await events.until(1)) == [("ADDED", "c")]
    await events.stop()


async def test_a_label_selector_filters_a_watch(server: K8sTestServer, client: AsyncClient) -> None:
    rv = (await client.create(config_map("web", {"app": "web"}))).metadata.resourceVersion
    events = Events(client.watch(ConfigMap, namespace="default", labels={"app": "web"}, resource_version="0"))
    await server.wait_for_watches(1)  # else the first changes could already be in its initial list
    await client.create(config_map("db", {"app": "db"}))
    await client.patch(ConfigMap, "web", {"data": {"k": "v"}}, namespace="default")
    # leaving the selection is a DELETED, entering it an ADDED (as the watch cache sends them)
    await client.patch(ConfigMap, "web", {"metadata": {"labels": {"app": "old"}}}, namespace="default")
    await client.patch(ConfigMap, "db", {"metadata": {"labels": {"app": "web"}}}, namespace="default")
    await client.delete(ConfigMap, "db", namespace="default")
    seen = await events.until(5)
    await events.stop()
    assert kinds_and_names(seen) == [
        ("ADDED", "web"),
        ("MODIFIED", "web"),
        ("DELETED", "web"),
        ("ADDED", "db"),
        ("DELETED", "db"),
    ]
    assert int(seen[0][2]) == int(rv)


async def test_a_field_selector_watches_one_object(client: AsyncClient) -> None:
    events = Events(client.watch(ConfigMap, namespace="default", fields={"metadata.name": "b"}))
    for name in ("a", "b", "c"):
        await client.create(config_map(name))
    assert kinds_and_names(await events.until(1)) == [("ADDED", "b")]
    # events come in order: had "c" passed the selector, it would be before b's deletion
    await client.delete(ConfigMap, "b", namespace="default")
    assert kinds_and_names(await events.until(2)) == [("ADDED", "b"), ("DELETED", "b")]
    await events.stop()


async def test_close_watches_ends_them_and_lightkube_resumes_without_gaps_or_repeats(
    server: K8sTestServer, client: AsyncClient
) -> None:
    listing = client.list(ConfigMap, namespace="default")
    _ = [cm async for cm in listing]
    events = Events(client.watch(ConfigMap, namespace="default", resource_version=listing.resourceVersion))
    for i in range(3):
        await client.create(config_map(f"cm-{i}"))
    await events.until(3)
    assert server.close_watches() == 1
    # changes while no watch is open are sent after the reconnect, from the last version seen
    for i in range(3, 6):
        await client.create(config_map(f"cm-{i}"))
    await client.delete(ConfigMap, "cm-0", namespace="default")
    seen = await events.until(7)
    await events.stop()
    assert kinds_and_names(seen) == [("ADDED", f"cm-{i}") for i in range(6)] + [("DELETED", "cm-0")]
    watches = [r for r in server.requests if r.query.get("watch") == "true"]
    assert len(watches) == 2
    assert watches[1].query["resourceVersion"] == seen[2][2]


async def test_timeout_seconds_ends_a_watch_with_a_bookmark(server: K8sTestServer) -> None:
    server.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}})
    rv = server.resource_version
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.get(
            "/api/v1/namespaces/default/configmaps",
            params={"watch": "1", "timeoutSeconds": "1", "allowWatchBookmarks": "true"},
        )
    assert 0.9 < time.monotonic() - started < 10  # ended by the server after 1 s, not by the client
    assert response.headers["content-type"] == "application/json"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [e["type"] for e in lines] == ["ADDED", "BOOKMARK"]
    assert lines[1]["object"] == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv},
    }


async def test_periodic_bookmarks_carry_the_latest_version() -> None:
    server = K8sTestServer(bookmark_interval=0.2)
    before = server.resource_version
    with server.serve():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            params = {
                "watch": "true",
                "allowWatchBookmarks": "true",
                "resourceVersion": server.resource_version,
            }
            async with http.stream("GET", "/api/v1/namespaces/default/configmaps", params=params) as response:
                lines = response.aiter_lines()
                first = json.loads(await anext(lines))
                await http.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "a"}})
                # more bookmarks of the old version may come first on a busy machine (0.2 s apart)
                added = json.loads(await anext(lines))
                while added["type"] == "BOOKMARK":
                    assert added == first
                    added = json.loads(await anext(lines))
                bookmark = json.loads(await anext(lines))
    assert first["type"] == "BOOKMARK"
    assert first["object"]["metadata"]["resourceVersion"] == before
    assert added["type"] == "ADDED"
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": added["object"]["metadata"]["resourceVersion"]},
        },
    }


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"resourceVersion": "abc"}, 400),
        ({"resourceVersion": "999999"}, 504),
        ({"timeoutSeconds": "-1"}, 400),
        ({"allowWatchBookmarks": "maybe"}, 400),
        ({"labelSelector": "a in (b"}, 400),
        ({"sendInitialEvents": "true"}, 400),
    ],
)
def test_bad_watch_parameters_are_rejected_before_streaming(
    server: K8sTestServer, params: dict[str, str], code: int
) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        response = http.get("/api/v1/namespaces/default/configmaps", params={"watch": "true", **params})
    assert response.status_code == code
    assert response.json()["kind"] == "Status"


async def test_stopping_the_server_ends_open_watches_at_once() -> None:
    server = K8sTestServer()
    serving = contextlib.ExitStack()
    # a server that waited for open responses would wait this long
    serving.enter_context(server.serve(graceful_shutdown_s=30))
    http = httpx.AsyncClient(base_url=server.url, timeout=60)

    async def read() -> list[str]:
        params = {"watch": "true", "resourceVersion": server.resource_version}
        async with http.stream("GET", "/api/v1/namespaces/default/configmaps", params=params) as response:
            return [line async for line in response.aiter_lines()]

    reader = asyncio.create_task(read())
    await server.wait_for_watches(1)
    started = time.monotonic()
    serving.close()  # uvicorn waits up to 30 s for open responses; an open watch must not make it wait
    assert time.monotonic() - started < 10
    assert await asyncio.wait_for(reader, 30) == []
    assert server.open_watches == 0
    await http.aclose()


# --------------------------------------------------------------------------- custom kinds and /status


def test_crd_kinds_are_discovered_with_their_status_subresource(server: K8sTestServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        resources = {r["name"]: r for r in http.get(f"/apis/{GROUP}/v1alpha1").json()["resources"]}
        assert set(resources) == {"federatedclusters", "federatedclusters/status"}
        assert resources["federatedclusters"]["namespaced"] is False
        assert resources["federatedclusters"]["shortNames"] == ["fc"]
        assert "watch" in resources["federatedclusters"]["verbs"]
        assert resources["federatedclusters/status"]["verbs"] == ["get", "patch", "update"]
        widgets = http.get("/apis/example.qcdr.io/v1").json()["resources"]
        assert [(w["name"], w["namespaced"]) for w in widgets] == [("widgets", True)]
        assert http.get("/apis/example.qcdr.io/v1/namespaces/default/widgets/w/status").status_code == 404


async def test_status_subresource_and_generation(server: K8sTestServer, client: AsyncClient) -> None:
    body = cluster("east", region="us-east-1", provider="aws")
    body["status"] = {"state": "healthy"}  # ignored on create, as by the API server
    created = await client.create(FederatedCluster(body))
    assert created["metadata"]["generation"] == 1
    assert "status" not in created
    assert created["spec"]["paused"] is False  # defaulted from the schema

    # a status write: status changes, spec and generation do not (a spec change in it is ignored)
    status = await client.patch(
        FederatedCluster.Status,
        "east",
        {"spec": {"region": "elsewhere"}, "status": {"state": "pending", "nodeCount": 3}},
        patch_type=PatchType.MERGE,
    )
    assert status["status"] == {"state": "pending", "nodeCount": 3}
    assert status["spec"]["region"] == "us-east-1"
    assert status["metadata"]["generation"] == 1
    assert int(status["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    # a spec change bumps the generation and keeps the status, even when the body says otherwise
    current = await client.get(FederatedCluster, "east")
    current["spec"]["region"] = "us-east-2"
    current["status"] = {"state": "offline"}
    replaced = await client.replace(FederatedCluster(current))
    assert replaced["metadata"]["generation"] == 2
    assert replaced["spec"]["region"] == "us-east-2"
    assert replaced["status"] == {"state": "pending", "nodeCount": 3}
    merged = await client.patch(
        FederatedCluster, "east", {"status": {"state": "offline"}}, patch_type=PatchType.MERGE
    )
    assert merged["status"]["state"] == "pending"
    assert merged["metadata"]["resourceVersion"] == replaced["metadata"]["resourceVersion"]  # a no-op

    # metadata changes do not bump it either
    labelled = await client.patch(
        FederatedCluster, "east", {"metadata": {"labels": {"team": "sec"}}}, patch_type=PatchType.MERGE
    )
    assert labelled["metadata"]["generation"] == 2

    # PUT /status replaces the whole status; GET /status is the object
    whole = copy.deepcopy(labelled)
    whole["status"] = {"state": "healthy", "observedGeneration": 2}
    put = await client.replace(FederatedCluster.Status(whole))
    assert put["status"] == {"state": "healthy", "observedGeneration": 2}
    assert put["metadata"]["generation"] == 2
    assert (await client.get(FederatedCluster.Status, "east"))["status"] == put["status"]
    with pytest.raises(ApiError) as exc:  # stale resourceVersion on /status
        await client.replace(FederatedCluster.Status(whole))
    assert exc.value.status.code == 409

    # status fields are owned apart from the main resource's, as "subresource: status"
    fields_by_subresource = {m.get("subresource"): m["fieldsV1"] for m in put["metadata"]["managedFields"]}
    assert fields_by_subresource["status"] == {"f:status": {"f:observedGeneration": {}, "f:state": {}}}
    assert set(fields_by_subresource[None]) == {"f:metadata", "f:spec"}


async def test_status_server_side_apply(server: K8sTestServer, client: AsyncClient) -> None:
    await client.create(FederatedCluster(cluster("west")))
    applied = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "FederatedCluster", "metadata": {"name": "west"}}
    first = await client.patch(
        FederatedCluster.Status,
        "west",
        {**applied, "status": {"state": "healthy", "nodeCount": 2}},
        patch_type=PatchType.APPLY,
        field_manager="hub",
    )
    assert first["status"] == {"state": "healthy", "nodeCount": 2}
    # a second apply without nodeCount drops it: the manager no longer owns it
    second = await client.patch(
        FederatedCluster.Status,
        "west",
        {**applied, "status": {"state": "offline"}},
        patch_type=PatchType.APPLY,
        field_manager="hub",
    )
    assert second["status"] == {"state": "offline"}
    entries = [m for m in second["metadata"]["managedFields"] if m.get("subresource") == "status"]
    assert [(m["manager"], m["operation"]) for m in entries] == [("hub", "Apply")]
    assert entries[0]["fieldsV1"] == {"f:status": {"f:state": {}}}
    with pytest.raises(ApiError) as exc:  # another manager changing an owned field conflicts
        await client.patch(
            FederatedCluster.Status,
            "west",
            {**applied, "status": {"state": "pending"}},
            patch_type=PatchType.APPLY,
            field_manager="other",
        )
    assert exc.value.status.code == 409
    assert second["metadata"]["generation"] == 1


async def test_custom_objects_are_checked_against_the_crd_schema(client: AsyncClient) -> None:
    with pytest.raises(ApiError) as exc:
        await client.create(FederatedCluster(cluster("bad", provider="digitalocean")))
    assert (exc.value.status.code, exc.value.status.reason) == (422, "Invalid")
    assert 'spec.provider: Unsupported value: "digitalocean"' in (exc.value.status.message or "")
    with pytest.raises(ApiError) as exc:
        await client.create(FederatedCluster(cluster("bad", regoin="typo")))
    assert 'unknown field "regoin"' in (exc.value.status.message or "")
    with pytest.raises(ApiError) as exc:
        await client.create(FederatedCluster(cluster("bad", bootstrapTokenSecretRef={"key": "k"})))
    assert "spec.bootstrapTokenSecretRef.name: Required value" in (exc.value.status.message or "")
    with pytest.raises(ApiError) as exc:
        await client.create(FederatedCluster(cluster("Bad_Name")))
    assert "metadata.name" in (exc.value.status.message or "")

    ok = await client.create(FederatedCluster(cluster("ok", bootstrapTokenSecretRef={"name": "tok"})))
    assert ok["spec"]["bootstrapTokenSecretRef"] == {"name": "tok", "key": "token"}
    with pytest.raises(ApiError) as exc:  # the status is checked too
        await client.patch(
            FederatedCluster.Status,
            "ok",
            {"status": {"state": "exploded", "lastHeartbeat": "yesterday"}},
            patch_type=PatchType.MERGE,
        )
    message = exc.value.status.message or ""
    assert exc.value.status.code == 422
    assert "status.state: Unsupported value" in message
    assert "status.lastHeartbeat" in message
    # nulls of non-nullable fields are dropped, nullable ones kept
    written = await client.patch(
        FederatedCluster.Status,
        "ok",
        {"status": {"state": "healthy", "nodeCount": None, "message": None}},
        patch_type=PatchType.MERGE,
    )
    assert written["status"] == {"state": "healthy"}  # a merge patch's null deletes, as always
    put = copy.deepcopy(written)
    put["status"] = {"state": "healthy", "nodeCount": None, "message": None}
    assert (await client.replace(FederatedCluster.Status(put)))["status"] == {
        "state": "healthy",
        "message": None,
    }


async def test_watching_a_custom_kind_sees_status_writes(server: K8sTestServer, client: AsyncClient) -> None:
    listing = client.list(FederatedCluster)
    _ = [c async for c in listing]
    events = Events(client.watch(FederatedCluster, resource_version=listing.resourceVersion))
    await client.create(FederatedCluster(cluster("east")))
    server.set_status(f"{GROUP}/v1alpha1", "FederatedCluster", "east", {"state": "healthy"})
    await client.patch(FederatedCluster, "east", {"spec": {"region": "eu"}}, patch_type=PatchType.MERGE)
    await client.delete(FederatedCluster, "east")
    seen = await events.until(4)
    await events.stop()
    assert kinds_and_names(seen) == [
        ("ADDED", "east"),
        ("MODIFIED", "east"),
        ("MODIFIED", "east"),
        ("DELETED", "east"),
    ]


async def test_lightkube_wait_for_a_condition_on_a_custom_kind(
    server: K8sTestServer, client: AsyncClient
) -> None:
    await client.create(FederatedCluster(cluster("east")))

    async def later() -> None:
        await server.wait_for_watches(1)
        conditions = [{"type": "Ready", "status": "True", "reason": "Heartbeat"}]
        await client.patch(
            FederatedCluster.Status,
            "east",
            {"status": {"conditions": conditions}},
            patch_type=PatchType.MERGE,
        )

    writer = asyncio.create_task(later())
    ready = await asyncio.wait_for(client.wait(FederatedCluster, "east", for_conditions=["Ready"]), 5)
    await writer
    assert ready["status"]["conditions"][0]["reason"] == "Heartbeat"


async def test_without_a_status_subresource_status_is_an_ordinary_field(client: AsyncClient) -> None:
    widget = {
        "apiVersion": "example.qcdr.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"anything": {"goes": [1, 2]}},
        "status": {"phase": "new"},
    }
    created = await client.create(Widget(widget))
    assert created["status"] == {"phase": "new"}
    patched = await client.patch(
        Widget, "w", {"status": {"phase": "done"}}, namespace="default", patch_type=PatchType.MERGE
    )
    assert patched["status"] == {"phase": "done"}
    assert patched["metadata"]["generation"] == 2  # every change but metadata counts here


def test_crd_resource_type_and_bad_crds() -> None:
    rt = crd_resource_type(CLUSTER_CRD)
    assert (rt.group, rt.version, rt.kind, rt.plural, rt.namespaced) == (
        GROUP,
        "v1alpha1",
        "FederatedCluster",
        "federatedclusters",
        False,
    )
    assert (rt.has_status, rt.custom, rt.status_is_field) == (True, True, False)
    server = K8sTestServer(installed=[rt])
    assert server.seed(cluster("seeded"))["metadata"]["generation"] == 1
    with pytest.raises(ValueError, match="must be named"):
        crd_resource_type({**CLUSTER_CRD, "metadata": {"name": "clusters"}})
    with pytest.raises(ValueError, match="scope"):
        crd_resource_type({**CLUSTER_CRD, "spec": {**CLUSTER_CRD["spec"], "scope": "Global"}})
    with pytest.raises(ValueError, match="no version"):
        crd_resource_type(CLUSTER_CRD, "v9")


async def test_the_repository_crds_install(tmp_path: Path) -> None:
    server = K8sTestServer.from_crds([REPO / "k8s" / "crds"])
    kinds = {rt.kind for rt in server.resource_types if rt.group == GROUP}
    assert {"FederatedCluster", "FederatedTracingPolicy", "FederatedNetworkPolicy"} <= kinds
    assert all(rt.has_status for rt in server.resource_types if rt.group == GROUP)
    with server.serve():
        async with server.async_client() as client:
            created = await client.create(
                FederatedCluster(cluster("east", region="us-east-1", provider="aws"))
            )
            assert created["metadata"]["generation"] == 1
    (tmp_path / "empty.yaml").write_text("kind: Kustomization\n")
    with pytest.raises(ValueError, match="no CustomResourceDefinition"):
        K8sTestServer.from_crds([tmp_path / "empty.yaml"])
