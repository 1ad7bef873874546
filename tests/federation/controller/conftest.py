"""Fixtures of the controller tests: the shared Kubernetes API test server serving the federation
CRDs (and Secrets), and a hub app whose controller watches it."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lightkube
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.k8s import DEFAULT_INSTALLED, GVK, K8sTestServer
from qcdr_federation.hub.controller.kinds import CrdKind, resource
from qcdr_federation.settings import FederationSettings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.federation.conftest import make_hub_settings

CRDS = Path(__file__).resolve().parents[3] / "k8s" / "crds"
NAMESPACE = "qualys-system"
T = TypeVar("T")


@pytest.fixture
def k8s() -> Iterator[K8sTestServer]:
    server = K8sTestServer.from_crds(
        [CRDS],
        installed=[*DEFAULT_INSTALLED, GVK("", "v1", "Secret")],
        namespaces=("default", NAMESPACE),
    )
    with server.serve():
        yield server


def controller_settings(
    database_url: str, redis_url: str, redis_prefix: str, kubeconfig: Path, **overrides: Any
) -> FederationSettings:
    values: dict[str, Any] = {
        "controller_enabled": True,
        "kubeconfig": kubeconfig,
        "controller_status_s": 0.2,
        "controller_backoff_max_s": 0.5,
        "controller_resync_s": 60.0,
        "controller_namespace": NAMESPACE,
        "rollout_interval_s": 0.2,
    }
    values.update(overrides)
    return make_hub_settings(database_url, redis_url, redis_prefix, **values)


@pytest.fixture
def hub_settings(
    federation_db: str, redis_url: str, redis_prefix: str, k8s: K8sTestServer, tmp_path: Path
) -> FederationSettings:
    """The shared ``hub_app`` fixture with the controller on, watching the test API server."""
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    return controller_settings(federation_db, redis_url, redis_prefix, kubeconfig)


@pytest.fixture
async def kube(k8s: K8sTestServer) -> AsyncIterator[lightkube.AsyncClient]:
    """The test's own client of the API server (what kubectl would be)."""
    client = k8s.async_client()
    try:
        yield client
    finally:
        await client.close()


async def eventually(check: Callable[[], Awaitable[T]], *, within_s: float = 15.0) -> T:
    """``check()``'s value once it stops raising AssertionError (or its last failure)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- objects


def cluster_object(name: str, secret: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(spec)
    if secret is not None:
        body["bootstrapTokenSecretRef"] = {"name": secret, "namespace": NAMESPACE}
    return {
        "apiVersion": "federation.qualys.com/v1alpha1",
        "kind": "FederatedCluster",
        "metadata": {"name": name},
        "spec": body,
    }


def tracing_object(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": {
            "metadata": {"name": name, "namespace": "payments"},
            "spec": {
                "kprobes": [
                    {
                        "call": "security_file_permission",
                        "syscall": False,
                        "args": [{"index": 0, "type": "file"}, {"index": 1, "type": "int"}],
                        "selectors": [
                            {
                                "matchArgs": [{"index": 0, "operator": "Prefix", "values": ["/etc/shadow"]}],
                                "matchActions": [{"action": "Sigkill"}],
                            }
                        ],
                    }
                ]
            },
        },
        "placement": {"clusterSelector": {"matchLabels": {"env": "prod"}}},
    }
    body.update(spec)
    return {
        "apiVersion": "federation.qualys.com/v1alpha1",
        "kind": "FederatedTracingPolicy",
        "metadata": {"name": name},
        "spec": body,
    }


async def create(kube: lightkube.AsyncClient, obj: dict[str, Any]) -> dict[str, Any]:
    kind = CrdKind(obj["kind"])
    created = await kube.create(resource(kind).from_dict(obj))
    return dict(created)


async def create_secret(kube: lightkube.AsyncClient, name: str, token: str) -> None:
    await kube.create(
        Secret(
            metadata=ObjectMeta(name=name, namespace=NAMESPACE),
            data={"token": base64.b64encode(token.encode()).decode()},
        )
    )


async def status_of(kube: lightkube.AsyncClient, kind: CrdKind, name: str) -> dict[str, Any]:
    obj = await kube.get(resource(kind), name)
    status = obj.get("status") or {}
    return dict(status)


def condition(status: dict[str, Any], type_: str) -> tuple[str, str]:
    for cond in status.get("conditions") or []:
        if cond["type"] == type_:
            return cond["status"], cond["reason"]
    raise AssertionError(f"no {type_} condition in {status}")


@pytest.fixture
async def sessions(federation_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the hub's database (the reconciler's, without the app)."""
    engine = make_engine(federation_db)
    yield make_session_factory(engine)
    await engine.dispose()


@pytest.fixture
def settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    """Hub settings without the controller's API server (what a Reconciler needs)."""
    return make_hub_settings(federation_db, redis_url, redis_prefix)
