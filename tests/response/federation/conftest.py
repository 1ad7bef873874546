"""Fixtures and factories for the federated-policy tests: the response database fixtures, the
shared Kubernetes API test server, placed/removed envelopes as the federation spoke writes them."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from qcdr_common.contracts.federation.v1 import (
    ANNOTATION_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_POLICY_ID,
    MANAGED_BY,
    POLICY_PLACED,
    POLICY_REMOVED,
    PolicyPlaced,
    PolicyRemoved,
)
from qcdr_common.streams.consumer import Delivery
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.db.models import outbox
from qcdr_response.lifecycle.cluster import ClusterGateway
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import (
    committed_database_url,
    committed_db,
    response_database_url,
    sessions,
)

__all__ = ["committed_database_url", "committed_db", "response_database_url", "sessions"]

Sessions = async_sessionmaker[AsyncSession]
CLUSTER = "spoke-a"


def tracing_manifest(
    name: str = "fed-block-c2",
    namespace: str | None = "payments",
    *,
    policy_id: str = "fp-0001",
    generation: int = 1,
    port: str = "4444",
    action: str = "Sigkill",
) -> dict[str, Any]:
    """A TracingPolicy(Namespaced) as the hub renders it: kill connects to a C2 port."""
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {LABEL_POLICY_ID: policy_id, LABEL_MANAGED_BY: MANAGED_BY},
        "annotations": {ANNOTATION_GENERATION: str(generation)},
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicyNamespaced" if namespace else "TracingPolicy",
        "metadata": metadata,
        "spec": {
            "kprobes": [
                {
                    "call": "tcp_connect",
                    "syscall": False,
                    "args": [{"index": 0, "type": "sock"}],
                    "selectors": [
                        {
                            "matchArgs": [{"index": 0, "operator": "DPort", "values": [port]}],
                            "matchActions": [{"action": action}],
                        }
                    ],
                }
            ]
        },
    }


def network_manifest(name: str = "fed-deny-c2", namespace: str | None = "payments") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {LABEL_MANAGED_BY: MANAGED_BY}}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": metadata,
        "spec": {
            "endpointSelector": {},
            "enableDefaultDeny": {"egress": False, "ingress": False},
            "egressDeny": [{"toCIDR": ["203.0.113.7/32"]}],
        },
    }


def hub_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)).hexdigest()


def placed(
    manifest: dict[str, Any],
    *,
    policy_id: str = "fp-0001",
    generation: int = 1,
    enforce: bool = False,
    name: str = "block-c2",
    sequence: int | None = None,
) -> Envelope:
    """A ``federation.policy_placed`` envelope as the spoke enqueues it."""
    body = copy.deepcopy(manifest)
    payload = PolicyPlaced(
        policy_id=policy_id,
        name=name,
        generation=generation,
        content_hash=hub_hash(body),
        enforce=enforce,
        manifest=body,
        cluster=CLUSTER,
        sequence=sequence,
    )
    return new_envelope(
        POLICY_PLACED, payload, source="federation", cluster_id=CLUSTER, occurred_at=datetime.now(UTC)
    )


def removed(
    manifest: dict[str, Any],
    *,
    policy_id: str = "fp-0001",
    name: str = "block-c2",
    sequence: int | None = None,
) -> Envelope:
    meta = manifest["metadata"]
    payload = PolicyRemoved(
        sequence=sequence,
        policy_id=policy_id,
        name=name,
        cluster=CLUSTER,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        namespace=meta.get("namespace"),
        manifest_name=meta["name"],
    )
    return new_envelope(
        POLICY_REMOVED, payload, source="federation", cluster_id=CLUSTER, occurred_at=datetime.now(UTC)
    )


def deliveries(*envelopes: Envelope) -> list[Delivery]:
    return [Delivery(entry_id=f"{i + 1}-0", envelope=e, deliveries=1) for i, e in enumerate(envelopes)]


async def outbox_events(sessions: Sessions) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of every outbox row, in relay order."""
    async with sessions() as session:
        rows = (await session.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.id))).all()
    return [(type_, orjson.loads(data)["payload"]) for type_, data in rows]


@pytest.fixture
def k8s(shared_path: Path) -> Iterator[K8sTestServer]:
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    with server.serve():
        yield server


@pytest.fixture
async def cluster(k8s: K8sTestServer) -> AsyncIterator[ClusterGateway]:
    gateway = ClusterGateway(k8s.async_client)
    yield gateway
    await gateway.close()
