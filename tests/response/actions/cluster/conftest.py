"""Cluster actions run against the shared Kubernetes API test server, which validates every stored
object strictly (Cilium's CRD schemas from ../shared, built-in kinds with kubernetes-validate)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.contracts.actions.v1 import ActionOp, ActionRequest, ActionTarget
from qcdr_common.testing.k8s_server import DEFAULT_INSTALLED, GVK, K8sTestServer, RequestRecord
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.actions.cluster._context import ClusterContext

NAMESPACE = "shop"
CLUSTER_KINDS = DEFAULT_INSTALLED | {
    GVK("", "v1", "Node"),
    GVK("apps", "v1", "Deployment"),
    GVK("apps", "v1", "ReplicaSet"),
    GVK("apps", "v1", "StatefulSet"),
    GVK("apps", "v1", "DaemonSet"),
    GVK("policy", "v1", "PodDisruptionBudget"),
}
_ids = count(100)


@pytest.fixture
def server(shared_path: Path) -> Iterator[K8sTestServer]:
    srv = K8sTestServer(
        installed=CLUSTER_KINDS, validator=ManifestValidator(shared_path), namespaces=("default", NAMESPACE)
    )
    with srv.serve():
        yield srv


@pytest.fixture
async def ctx(server: K8sTestServer) -> AsyncIterator[ClusterContext]:
    async with server.async_client() as client:
        yield ClusterContext(client=client)


def make_pod(
    name: str = "web-1",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    node: str | None = "node-1",
    owner: tuple[str, str, str] | None = None,
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {"app": "web"}}
    if annotations:
        meta["annotations"] = annotations
    if owner:
        api_version, kind, owner_name = owner
        meta["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": "0b7b6a52-5a4c-4d0f-9d0e-3f0a4b1c2d3e",
                "controller": True,
            }
        ]
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def make_workload(
    kind: str, name: str = "web", replicas: int = 3, owner: tuple[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]},
        },
    }
    if kind != "DaemonSet":
        spec["replicas"] = replicas
    if kind == "StatefulSet":
        spec["serviceName"] = name
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": "5d0c2f7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                "controller": True,
            }
        ]
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def make_request(action: str, target: ActionTarget | None = None, **overrides: Any) -> ActionRequest:
    data: dict[str, Any] = {
        "action_id": next(_ids),
        "action": action,
        "target": target or ActionTarget(namespace=NAMESPACE, pod="web-1"),
        "dry_run": False,
        "reason": "finding: reverse shell",
        "requested_at": datetime(2026, 12, 4, 12, 0, tzinfo=UTC),
    }
    data.update(overrides)
    return ActionRequest(**data)


def undo_of(request: ActionRequest, record: dict[str, Any] | None, **overrides: Any) -> ActionRequest:
    return request.model_copy(update={"op": ActionOp.UNDO, "undo": record, **overrides})


def writes(server: K8sTestServer, since: int = 0) -> list[RequestRecord]:
    """The requests that change something (or would, in dry-run)."""
    return [r for r in server.requests[since:] if r.method != "GET"]


def calls(server: K8sTestServer, since: int = 0) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests[since:]]
