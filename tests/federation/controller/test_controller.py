"""The controller end to end: objects on the shared Kubernetes API test server, the hub app (in
process, with its database) reconciling them, spokes talking to the hub's real routes, and status
coming back onto the objects. Watch reconnects and 410 relists lose nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import lightkube
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from lightkube import ApiError
from lightkube.models.meta_v1 import Status
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType
from prometheus_client import REGISTRY
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.k8s import DEFAULT_INSTALLED, GVK, K8sTestServer
from qcdr_federation.app import create_app
from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow
from qcdr_federation.hub.clusters.service import declare_cluster
from qcdr_federation.hub.controller.controller import Controller
from qcdr_federation.hub.controller.convert import policy_spec
from qcdr_federation.hub.controller.kinds import CrdKind, resource
from qcdr_federation.hub.controller.writeback import StatusWriter
from qcdr_federation.hub.policies.models import FederatedPolicyRow
from qcdr_federation.hub.policies.service import apply_spec
from qcdr_federation.settings import FederationSettings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.federation.conftest import WRITE_HEADERS, api_auth, bearer
from tests.federation.controller.conftest import (
    CRDS,
    NAMESPACE,
    cluster_object,
    condition,
    controller_settings,
    create,
    create_secret,
    eventually,
    status_of,
    tracing_object,
)

pytestmark = [pytest.mark.db, pytest.mark.integration]

TOKEN = "prod-eu-bootstrap-token-0123456789abcdef"


def controller_of(app: FastAPI) -> Controller:
    controller: Controller = app.state.federation_controller
    return controller


def sessions_of(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = app.state.sessions
    return sessions


async def db_cluster(app: FastAPI, name: str) -> ClusterRow | None:
    async with sessions_of(app)() as session:
        return (
            await session.scalars(
                select(ClusterRow).where(ClusterRow.name == name, ClusterRow.removed_at.is_(None))
            )
        ).one_or_none()


async def db_policy(app: FastAPI, name: str) -> FederatedPolicyRow | None:
    async with sessions_of(app)() as session:
        return (
            await session.scalars(
                select(FederatedPolicyRow).where(
                    FederatedPolicyRow.name == name, FederatedPolicyRow.deleted_at.is_(None)
                )
            )
        ).one_or_none()


async def register(hub_client: httpx.AsyncClient, name: str, token: str) -> dict[str, str]:
    """The spoke's side: present the bootstrap token once; the credential's headers."""
    response = await hub_client.post(
        "/federation/v1/register", json={"cluster_name": name, "bootstrap_token": token, "version": "0.1.0"}
    )
    assert response.status_code == 201, response.text
    return bearer(response.json()["credential"])


async def heartbeat(hub_client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> None:
    payload = {"sent_at": datetime.now(UTC).isoformat(), "version": "0.1.0", **body}
    response = await hub_client.post("/federation/v1/heartbeat", json=payload, headers=headers)
    assert response.status_code == 200, response.text


async def registered_cluster(
    kube: lightkube.AsyncClient, hub_client: httpx.AsyncClient, name: str = "prod-eu"
) -> dict[str, str]:
    token = f"{name}-bootstrap-token-0123456789abcdef"
    await create_secret(kube, f"{name}-bootstrap", token)
    await create(
        kube, cluster_object(name, f"{name}-bootstrap", labels={"env": "prod"}, region="europe-west1")
    )

    async def token_registered() -> None:
        status = await status_of(kube, CrdKind.CLUSTER, name)
        assert condition(status, "Registered") == ("False", "AwaitingRegistration")

    await eventually(token_registered)
    return await register(hub_client, name, token)


# --------------------------------------------------------------------------- clusters


async def test_a_cluster_object_and_its_secret_let_the_spoke_register(
    hub_app: FastAPI, hub_client: httpx.AsyncClient, kube: lightkube.AsyncClient
) -> None:
    await create_secret(kube, "prod-eu-bootstrap", f"{TOKEN}\n")
    await create(
        kube,
        cluster_object(
            "prod-eu",
            "prod-eu-bootstrap",
            labels={"env": "prod", "compliance": "gdpr"},
            region="europe-west1",
            provider="gcp",
        ),
    )

    async def declared() -> ClusterRow:
        row = await db_cluster(hub_app, "prod-eu")
        assert row is not None
        return row

    row = await eventually(declared)
    assert row.source == "crd"
    assert row.labels == {"env": "prod", "compliance": "gdpr", "region": "europe-west1", "provider": "gcp"}
    async with sessions_of(hub_app)() as session:
        (token,) = (await session.scalars(select(BootstrapTokenRow))).all()
    assert token.sha256 == hashlib.sha256(TOKEN.encode()).digest()
    assert (token.source, token.created_by, token.expires_at) == ("crd", "crd:prod-eu", None)

    async def pending() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.CLUSTER, "prod-eu")
        assert condition(status, "Registered") == ("False", "AwaitingRegistration")
        return status

    status = await eventually(pending)
    assert status["state"] == "pending"
    assert status["registered"] is False
    assert condition(status, "Ready") == ("False", "AwaitingRegistration")

    headers = await register(hub_client, "prod-eu", TOKEN)
    await heartbeat(hub_client, headers)  # the spoke got its credential: the token is spent
    again = await hub_client.post(
        "/federation/v1/register", json={"cluster_name": "prod-eu", "bootstrap_token": TOKEN}
    )
    assert again.status_code == 401, "a bootstrap token works once"

    async def registered() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.CLUSTER, "prod-eu")
        assert condition(status, "Registered") == ("True", "Registered")
        return status

    status = await eventually(registered)
    assert status["registered"] is True
    assert "registeredAt" in status

    await heartbeat(hub_client, headers, node_count=3, pod_count=42, kubernetes_version="v1.31.2")

    async def healthy() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.CLUSTER, "prod-eu")
        assert status["state"] == "healthy"
        assert condition(status, "Ready") == ("True", "Heartbeat")
        assert (status.get("nodeCount"), status.get("podCount")) == (3, 42)
        return status

    status = await eventually(healthy)
    assert status["kubernetesVersion"] == "v1.31.2"
    assert status["version"] == "0.1.0"
    assert "lastHeartbeat" in status


async def test_a_secret_that_comes_later_is_picked_up(hub_app: FastAPI, kube: lightkube.AsyncClient) -> None:
    await create(kube, cluster_object("late", "late-bootstrap"))

    async def missing() -> None:
        status = await status_of(kube, CrdKind.CLUSTER, "late")
        assert condition(status, "Registered") == ("False", "SecretNotFound")

    await eventually(missing)
    await create_secret(kube, "late-bootstrap", TOKEN)

    async def waiting() -> None:
        status = await status_of(kube, CrdKind.CLUSTER, "late")
        assert condition(status, "Registered") == ("False", "AwaitingRegistration")

    await eventually(waiting)


async def test_deleting_the_object_removes_the_cluster(
    hub_app: FastAPI, hub_client: httpx.AsyncClient, kube: lightkube.AsyncClient
) -> None:
    headers = await registered_cluster(kube, hub_client, "gone")
    await heartbeat(hub_client, headers)
    await kube.delete(resource(CrdKind.CLUSTER), "gone")

    async def removed() -> None:
        assert await db_cluster(hub_app, "gone") is None

    await eventually(removed)
    response = await hub_client.post(
        "/federation/v1/heartbeat", json={"sent_at": datetime.now(UTC).isoformat()}, headers=headers
    )
    assert response.status_code == 401, "a removed cluster's credential stops working"


# --------------------------------------------------------------------------- policies


async def test_a_policy_object_is_placed_versioned_reported_and_removed(
    hub_app: FastAPI, hub_client: httpx.AsyncClient, kube: lightkube.AsyncClient
) -> None:
    headers = await registered_cluster(kube, hub_client)
    await heartbeat(hub_client, headers)
    await create(kube, tracing_object("deny-shadow"))

    async def applied() -> FederatedPolicyRow:
        row = await db_policy(hub_app, "deny-shadow")
        assert row is not None
        return row

    row = await eventually(applied)
    assert (row.generation, row.source, row.kind) == (1, "crd", "TracingPolicyNamespaced")

    async def placed() -> dict[str, Any]:
        response = await hub_client.get("/federation/v1/policies", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert [p["name"] for p in body["policies"]] == ["deny-shadow"]
        return body

    placed_set = await eventually(placed)
    (policy,) = placed_set["policies"]
    assert policy["policy_id"] == row.id
    assert policy["manifest"]["kind"] == "TracingPolicyNamespaced"

    async def pending() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "deny-shadow")
        assert condition(status, "Synced") == ("False", "SyncPending")
        assert (status.get("policyId"), status.get("hubGeneration"), status.get("placedClusters")) == (
            row.id,
            1,
            1,
        )
        return status

    status = await eventually(pending)
    assert status["clusterStatuses"][0]["clusterName"] == "prod-eu"

    report = {
        "policies": [
            {
                "policy_id": policy["policy_id"],
                "generation": policy["generation"],
                "content_hash": policy["content_hash"],
                "state": "applied",
                "observed_at": datetime.now(UTC).isoformat(),
            }
        ]
    }
    response = await hub_client.post("/federation/v1/status", json=report, headers=headers)
    assert response.status_code == 204, response.text

    async def synced() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "deny-shadow")
        assert condition(status, "Synced") == ("True", "SyncSuccess")
        return status

    status = await eventually(synced)
    (entry,) = status["clusterStatuses"]
    assert (entry["state"], entry["inSync"], entry["generation"]) == ("applied", True, 1)
    cluster_status = await eventually(
        lambda: _cluster_policies(
            kube, [{"name": "deny-shadow", "state": "applied", "generation": 1, "inSync": True}]
        )
    )
    assert cluster_status["syncedPolicies"] == 1

    await kube.patch(
        resource(CrdKind.TRACING_POLICY),
        "deny-shadow",
        {"spec": {"enforce": True}},
        patch_type=PatchType.MERGE,
    )

    async def second_generation() -> dict[str, Any]:
        row = await db_policy(hub_app, "deny-shadow")
        assert row is not None
        assert row.generation == 2
        status = await status_of(kube, CrdKind.TRACING_POLICY, "deny-shadow")
        assert status["hubGeneration"] == 2
        assert condition(status, "Synced") == ("False", "SyncPending")
        assert status["observedGeneration"] == 2
        return status

    await eventually(second_generation)

    await kube.delete(resource(CrdKind.TRACING_POLICY), "deny-shadow")

    async def gone() -> None:
        assert await db_policy(hub_app, "deny-shadow") is None
        response = await hub_client.get("/federation/v1/policies", headers=headers)
        assert response.json()["policies"] == []

    await eventually(gone)


async def test_a_policy_object_suspends_and_rolls_out_with_its_status(
    hub_app: FastAPI, hub_client: httpx.AsyncClient, kube: lightkube.AsyncClient
) -> None:
    headers = await registered_cluster(kube, hub_client)
    await heartbeat(hub_client, headers)
    await create(kube, tracing_object("deny-shadow", suspend=True))

    async def suspended() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "deny-shadow")
        assert status.get("rollout", {}).get("phase") == "suspended"
        return status

    status = await eventually(suspended)
    # suspended from the start: nothing released, so the cluster gets nothing
    assert status["rollout"]["waitingClusters"] == 1
    response = await hub_client.get("/federation/v1/policies", headers=headers)
    assert response.json()["policies"] == []

    # resumed into a progressive rollout: the loop releases it to the one cluster
    await kube.patch(
        resource(CrdKind.TRACING_POLICY),
        "deny-shadow",
        {"spec": {"suspend": False, "rollout": {"strategy": "progressive", "maxConcurrency": "50%"}}},
        patch_type=PatchType.MERGE,
    )

    async def updating() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "deny-shadow")
        rollout = status.get("rollout", {})
        assert (rollout.get("phase"), rollout.get("updatingClusters")) == ("progressing", 1)
        return status

    status = await eventually(updating)
    assert status["rollout"]["generation"] == status["hubGeneration"] == 2
    response = await hub_client.get("/federation/v1/policies", headers=headers)
    assert [p["name"] for p in response.json()["policies"]] == ["deny-shadow"]

    # back to every cluster at once: no rollout to show
    await kube.patch(
        resource(CrdKind.TRACING_POLICY),
        "deny-shadow",
        {"spec": {"rollout": None}},
        patch_type=PatchType.MERGE,
    )

    async def plain() -> None:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "deny-shadow")
        assert status["hubGeneration"] == 3
        assert "rollout" not in status

    await eventually(plain)


async def _cluster_policies(kube: lightkube.AsyncClient, expected: list[dict[str, Any]]) -> dict[str, Any]:
    status = await status_of(kube, CrdKind.CLUSTER, "prod-eu")
    assert status.get("policies") == expected
    return status


async def test_a_template_the_hub_refuses_is_validation_failed(
    hub_app: FastAPI, hub_client: httpx.AsyncClient, kube: lightkube.AsyncClient
) -> None:
    await registered_cluster(kube, hub_client)
    bad = [
        {
            "clusterName": "prod-eu",
            "patches": [{"op": "replace", "path": "/spec/kprobes/3/call", "value": "x"}],
        }
    ]
    await create(kube, tracing_object("bad-patch", overrides=bad))

    async def refused() -> dict[str, Any]:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "bad-patch")
        assert condition(status, "Synced") == ("False", "ValidationFailed")
        return status

    status = await eventually(refused)
    (synced,) = status["conditions"]
    assert "spec.overrides[0].patches" in synced["message"]
    assert "prod-eu" in synced["message"]
    assert await db_policy(hub_app, "bad-patch") is None


async def test_a_name_an_api_policy_holds_is_a_policy_conflict(
    hub_app: FastAPI, hub_client: httpx.AsyncClient, kube: lightkube.AsyncClient
) -> None:
    spec = policy_spec(CrdKind.TRACING_POLICY, tracing_object("taken"))
    response = await hub_client.post(
        "/v1/federated-policies",
        json={"name": "taken", **spec.model_dump(mode="json")},
        headers=WRITE_HEADERS,
    )
    assert response.status_code == 201, response.text
    api_policy = response.json()
    await create(kube, tracing_object("taken", enforce=True))

    async def conflict() -> None:
        status = await status_of(kube, CrdKind.TRACING_POLICY, "taken")
        assert condition(status, "Synced") == ("False", "PolicyConflict")
        assert "policyId" not in status

    await eventually(conflict)
    await kube.delete(resource(CrdKind.TRACING_POLICY), "taken")
    row = await db_policy(hub_app, "taken")
    assert row is not None
    assert (row.id, row.generation, row.source, row.spec["enforce"]) == (api_policy["id"], 1, "api", False)


# --------------------------------------------------------------------------- watching


async def test_reconnects_and_an_expired_watch_lose_nothing(
    hub_app: FastAPI, kube: lightkube.AsyncClient, k8s: K8sTestServer
) -> None:
    controller = controller_of(hub_app)
    await controller.wait_synced()
    await create(kube, tracing_object("before"))
    await eventually(lambda: _exists(hub_app, "before"))
    informer = controller.informers[CrdKind.TRACING_POLICY]
    lists = informer.lists

    # a dropped connection: the watch resumes from the last version it saw, no list needed
    def watches_from() -> list[str | None]:
        return [
            r.query.get("resourceVersion")
            for r in k8s.requests
            if r.path.endswith("/federatedtracingpolicies") and r.query.get("watch") == "true"
        ]

    await k8s.wait_for_watches(3)
    seen = informer.resource_version
    assert seen is not None
    opened = len(watches_from())
    assert k8s.close_watches() >= 3
    created = await create(kube, tracing_object("after-reconnect"))
    await eventually(lambda: _exists(hub_app, "after-reconnect"))
    assert informer.lists == lists
    # From the version it had seen when the connection dropped: ``seen``, or a later one when the
    # controller's own status write on "before" reached it first (a busy machine), never the
    # new object's (which only the resumed watch can bring) and never a fresh list.
    resumed = watches_from()[opened:][:1]
    assert len(resumed) == 1, "watched again"
    assert resumed[0] is not None
    created_at = int(created["metadata"]["resourceVersion"])
    assert int(seen) <= int(resumed[0]) < created_at, "watched again from a version it had seen"

    # the history is gone (410 Expired): list again; a create and a delete in the gap both count
    await create(kube, cluster_object("elsewhere"))  # moves the server's version past the informer's
    await k8s.wait_for_watches(3)
    k8s.compact()
    k8s.close_watches()
    await create(kube, tracing_object("after-expiry"))
    await kube.delete(resource(CrdKind.TRACING_POLICY), "before")
    await eventually(lambda: _exists(hub_app, "after-expiry"))

    async def before_removed() -> None:
        assert await db_policy(hub_app, "before") is None

    await eventually(before_removed)
    assert informer.lists > lists
    assert set(informer.cache) == {"after-reconnect", "after-expiry"}


async def _exists(app: FastAPI, name: str) -> None:
    assert await db_policy(app, name) is not None


async def test_status_is_patched_only_when_it_changes(
    hub_app: FastAPI, kube: lightkube.AsyncClient, k8s: K8sTestServer
) -> None:
    await create(kube, cluster_object("quiet", labels={"env": "prod"}))

    async def written() -> None:
        status = await status_of(kube, CrdKind.CLUSTER, "quiet")
        assert condition(status, "Registered")[1] == "AwaitingRegistration"

    await eventually(written)

    def status_patches() -> int:
        return sum(1 for r in k8s.requests if r.method == "PATCH" and r.path.endswith("/quiet/status"))

    before = status_patches()
    assert before >= 1
    await asyncio.sleep(1.0)  # five status rounds at 0.2 s
    assert status_patches() == before


class RefusingClient:
    """The test server's client, except that the API server refuses one object's status patch."""

    def __init__(self, client: lightkube.AsyncClient, refused: str) -> None:
        self.client = client
        self.refused = refused

    async def patch(self, res: Any, name: str, obj: Any, **kwargs: Any) -> Any:
        if name == self.refused:
            raise ApiError(status=Status(code=422, message="status.lastHeartbeat: Invalid value"))
        return await self.client.patch(res, name, obj, **kwargs)


async def test_one_objects_refused_status_patch_does_not_hold_up_the_others(
    hub_app: FastAPI, kube: lightkube.AsyncClient, hub_settings: FederationSettings
) -> None:
    """One object whose status the API server refuses (before, a spoke's year-1 timestamp did it)
    is logged and counted; the other objects' status is still written, in the same round."""
    for name in ("aaa", "bbb"):
        await create(kube, cluster_object(name, labels={"env": "prod"}))
    controller = controller_of(hub_app)

    async def reconciled() -> None:
        assert {"aaa", "bbb"} <= set(controller.outcomes[CrdKind.CLUSTER])

    await eventually(reconciled)
    cache = controller.informers[CrdKind.CLUSTER].cache
    stale = {n: {k: v for k, v in cache[n].items() if k != "status"} for n in ("aaa", "bbb")}
    writer = StatusWriter(
        cast(lightkube.AsyncClient, RefusingClient(kube, "aaa")), sessions_of(hub_app), hub_settings
    )
    failures = (
        REGISTRY.get_sample_value(
            "qcdr_federation_controller_status_patch_failures_total", {"kind": CrdKind.CLUSTER.value}
        )
        or 0.0
    )

    updated = await writer.write(CrdKind.CLUSTER, stale, controller.outcomes[CrdKind.CLUSTER])

    assert [o["metadata"]["name"] for o in updated] == ["bbb"]
    assert (
        REGISTRY.get_sample_value(
            "qcdr_federation_controller_status_patch_failures_total", {"kind": CrdKind.CLUSTER.value}
        )
        == failures + 1
    )


async def test_objects_deleted_while_the_controller_was_away_are_collected_at_start(
    hub_settings: FederationSettings, kube: lightkube.AsyncClient
) -> None:
    app = create_app(hub_settings, auth=api_auth())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        await controller_of(app).wait_synced()
    # the controller is down: the hub still has rows objects made, whose objects are gone now
    engine = make_engine(hub_settings.database_url.get_secret_value())
    try:
        async with make_session_factory(engine)() as session:
            spec = policy_spec(CrdKind.TRACING_POLICY, tracing_object("orphan"))
            await apply_spec(session, "orphan", spec, source="crd", actor="crd")
            await apply_spec(session, "api-made", spec, source="api", actor="alice")
            await declare_cluster(session, "orphan-cluster", {}, source="crd")
            await declare_cluster(session, "api-cluster", {}, source="api")
            await session.commit()
    finally:
        await engine.dispose()
    await create(kube, tracing_object("kept"))

    # rows made a moment ago count as made before the list here (by default a minute is allowed
    # for other hub replicas' watches and clocks: test_replicas_gc.py)
    hub_settings = hub_settings.model_copy(update={"controller_gc_skew_s": 0.0})
    app = create_app(hub_settings, auth=api_auth())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):

        async def collected() -> None:
            assert await db_policy(app, "orphan") is None
            assert await db_cluster(app, "orphan-cluster") is None
            assert await db_policy(app, "kept") is not None

        await eventually(collected)
        assert await db_policy(app, "api-made") is not None
        assert await db_cluster(app, "api-cluster") is not None


async def test_a_kind_whose_crd_is_missing_does_not_hold_up_the_others(
    federation_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    only_clusters = K8sTestServer.from_crds(
        [CRDS / "federation.qualys.com_federatedclusters.yaml"],
        installed=[*DEFAULT_INSTALLED, GVK("", "v1", "Secret")],
        namespaces=("default", NAMESPACE),
    )
    with only_clusters.serve():
        settings = controller_settings(
            federation_db, redis_url, redis_prefix, only_clusters.write_kubeconfig(tmp_path / "kubeconfig")
        )
        app = create_app(settings, auth=api_auth())
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
            client = only_clusters.async_client()
            try:
                await create(client, cluster_object("alone", labels={"env": "prod"}))

                async def declared() -> None:
                    assert await db_cluster(app, "alone") is not None
                    status = await status_of(client, CrdKind.CLUSTER, "alone")
                    assert condition(status, "Registered")[1] == "AwaitingRegistration"

                await eventually(declared)
                controller = controller_of(app)
                assert not controller.informers[CrdKind.TRACING_POLICY].synced.is_set()
                assert not controller.synced
                lists = [
                    r
                    for r in only_clusters.requests
                    if r.path.endswith("/federatedtracingpolicies") and r.status_code == 404
                ]
                assert lists, "the missing kind is tried (and retried with a back-off)"
            finally:
                await client.close()


async def test_a_network_policy_object_becomes_a_cilium_policy(
    hub_app: FastAPI, kube: lightkube.AsyncClient
) -> None:
    obj = {
        "apiVersion": "federation.qualys.com/v1alpha1",
        "kind": "FederatedNetworkPolicy",
        "metadata": {"name": "deny-pool"},
        "spec": {
            "template": {
                "metadata": {"name": "deny-pool"},
                "spec": {"endpointSelector": {}, "egressDeny": [{"toCIDRSet": [{"cidr": "203.0.113.0/24"}]}]},
            },
            "placement": {"clusters": ["prod-eu"]},
        },
    }
    await create(kube, obj)

    async def stored() -> FederatedPolicyRow:
        row = await db_policy(hub_app, "deny-pool")
        assert row is not None
        return row

    row = await eventually(stored)
    assert (row.api_version, row.kind) == ("cilium.io/v2", "CiliumClusterwideNetworkPolicy")

    async def synced() -> None:
        status = await status_of(kube, CrdKind.NETWORK_POLICY, "deny-pool")
        # placed on a cluster that does not exist (yet): nothing to wait for
        assert condition(status, "Synced") == ("True", "SyncSuccess")
        assert status["placedClusters"] == 0

    await eventually(synced)


async def test_a_new_token_in_the_secret_is_registered_at_the_resync(
    federation_db: str,
    redis_url: str,
    redis_prefix: str,
    k8s: K8sTestServer,
    kube: lightkube.AsyncClient,
    tmp_path: Path,
) -> None:
    """A spoke that lost its state registers again: the operator puts a new token in the Secret."""
    settings = controller_settings(
        federation_db,
        redis_url,
        redis_prefix,
        k8s.write_kubeconfig(tmp_path / "kubeconfig"),
        controller_resync_s=0.5,
    )
    app = create_app(settings, auth=api_auth())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as hub_client:
            await registered_cluster(kube, hub_client, "rebuilt")
            new_token = "rebuilt-second-token-0123456789abcdef0"
            secret = await kube.get(Secret, "rebuilt-bootstrap", namespace=NAMESPACE)
            secret.data = {"token": base64.b64encode(new_token.encode()).decode()}
            await kube.replace(secret)

            async def registered_again() -> None:
                response = await hub_client.post(
                    "/federation/v1/register", json={"cluster_name": "rebuilt", "bootstrap_token": new_token}
                )
                assert response.status_code == 201, response.text

            await eventually(registered_again)
