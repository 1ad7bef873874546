"""Reconciling objects into the hub's database (no API server: Secrets come from a dict)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import RegisterRequest
from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow
from qcdr_federation.hub.clusters.registration import register
from qcdr_federation.hub.clusters.service import declare_cluster, remove_cluster
from qcdr_federation.hub.controller import status as st
from qcdr_federation.hub.controller.kinds import CrdKind
from qcdr_federation.hub.controller.reconcile import Reconciler, SecretUnavailableError
from qcdr_federation.hub.policies.models import FederatedPolicyRow
from qcdr_federation.hub.policies.service import apply_spec, placed_set
from qcdr_federation.settings import FederationSettings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.federation.controller.test_convert import fc, ftp

pytestmark = pytest.mark.db

TOKEN = "prod-eu-bootstrap-token-0123456789abcdef"


class Secrets:
    """Secrets by (namespace, name) -> {key: value}; what was read is recorded."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        self.reads: list[tuple[str, str, str]] = []

    async def read(self, namespace: str, name: str, key: str) -> str:
        self.reads.append((namespace, name, key))
        secret = self.data.get((namespace, name))
        if secret is None:
            raise SecretUnavailableError(
                st.REASON_SECRET_NOT_FOUND, f"Secret {namespace}/{name} does not exist"
            )
        if key not in secret:
            raise SecretUnavailableError(st.REASON_SECRET_KEY_MISSING, f"no key {key!r}")
        return secret[key]


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture
def notify() -> Counter:
    return Counter()


@pytest.fixture
def reconciler(
    sessions: async_sessionmaker[AsyncSession],
    settings: FederationSettings,
    secrets: Secrets,
    notify: Counter,
) -> Reconciler:
    return Reconciler(sessions, settings, secrets, notify=notify)


def prod_eu(**spec: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "labels": {"env": "prod", "compliance": "gdpr"},
        "region": "europe-west1",
        "provider": "gcp",
        "bootstrapTokenSecretRef": {"name": "prod-eu-bootstrap"},
    }
    values.update(spec)
    return fc("prod-eu", **values)


async def tokens(sessions: async_sessionmaker[AsyncSession]) -> list[BootstrapTokenRow]:
    async with sessions() as session:
        return list(
            (await session.scalars(select(BootstrapTokenRow).order_by(BootstrapTokenRow.created_at))).all()
        )


async def cluster(sessions: async_sessionmaker[AsyncSession], name: str) -> ClusterRow | None:
    async with sessions() as session:
        return (await session.scalars(select(ClusterRow).where(ClusterRow.name == name))).one_or_none()


async def policies(sessions: async_sessionmaker[AsyncSession]) -> dict[str, FederatedPolicyRow]:
    async with sessions() as session:
        rows = await session.scalars(
            select(FederatedPolicyRow).where(FederatedPolicyRow.deleted_at.is_(None))
        )
        return {r.name: r for r in rows.all()}


# --------------------------------------------------------------------------- clusters


async def test_a_cluster_is_declared_and_its_token_registered_by_digest(
    reconciler: Reconciler, secrets: Secrets, sessions: async_sessionmaker[AsyncSession], notify: Counter
) -> None:
    secrets.data[("qualys-system", "prod-eu-bootstrap")] = {"token": f"  {TOKEN}\n"}
    outcome = await reconciler.reconcile_cluster(prod_eu())
    assert outcome.ok
    assert outcome.generation == 3
    assert outcome.registration is not None
    assert outcome.registration[0] == st.REASON_AWAITING_REGISTRATION
    assert secrets.reads == [("qualys-system", "prod-eu-bootstrap", "token")]
    row = await cluster(sessions, "prod-eu")
    assert row is not None
    assert row.source == "crd"
    assert row.labels == {"env": "prod", "compliance": "gdpr", "region": "europe-west1", "provider": "gcp"}
    (token,) = await tokens(sessions)
    assert token.sha256 == hashlib.sha256(TOKEN.encode()).digest()  # white space around it ignored
    assert (token.cluster_name, token.source, token.created_by, token.expires_at) == (
        "prod-eu",
        "crd",
        "crd:prod-eu",
        None,
    )
    assert notify.calls == 1
    assert (await reconciler.reconcile_cluster(prod_eu())).ok
    assert notify.calls == 1, "nothing moved: no placement announcement"
    again = await reconciler.reconcile_cluster(prod_eu(labels={"env": "staging"}))
    assert again.ok
    assert len(await tokens(sessions)) == 1
    assert notify.calls == 2
    row = await cluster(sessions, "prod-eu")
    assert row is not None
    assert row.labels == {"env": "staging", "region": "europe-west1", "provider": "gcp"}


async def test_the_token_registers_the_spoke_once(
    reconciler: Reconciler,
    secrets: Secrets,
    sessions: async_sessionmaker[AsyncSession],
    settings: FederationSettings,
) -> None:
    secrets.data[("qualys-system", "prod-eu-bootstrap")] = {"token": TOKEN}
    await reconciler.reconcile_cluster(prod_eu())
    async with sessions() as session:
        answer = await register(
            session,
            RegisterRequest(cluster_name="prod-eu", bootstrap_token=SecretStr(TOKEN)),
            settings=settings,
            now=datetime.now(UTC),
            client="test",
        )
        await session.commit()
    assert answer.cluster_name == "prod-eu"
    outcome = await reconciler.reconcile_cluster(prod_eu())
    assert outcome.ok
    assert outcome.registration is None  # registered: nothing to wait for


async def test_a_missing_secret_is_retried_and_the_cluster_declared_anyway(
    reconciler: Reconciler, secrets: Secrets, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outcome = await reconciler.reconcile_cluster(
        prod_eu(bootstrapTokenSecretRef={"name": "later", "namespace": "ops", "key": "t"})
    )
    assert outcome.ok
    assert outcome.retry
    assert outcome.registration == (st.REASON_SECRET_NOT_FOUND, "Secret ops/later does not exist")
    assert await cluster(sessions, "prod-eu") is not None
    assert await tokens(sessions) == []
    secrets.data[("ops", "later")] = {"t": TOKEN}
    outcome = await reconciler.reconcile_cluster(
        prod_eu(bootstrapTokenSecretRef={"name": "later", "namespace": "ops", "key": "t"})
    )
    assert not outcome.retry
    assert len(await tokens(sessions)) == 1


async def test_a_short_token_is_refused(
    reconciler: Reconciler, secrets: Secrets, sessions: async_sessionmaker[AsyncSession]
) -> None:
    secrets.data[("qualys-system", "prod-eu-bootstrap")] = {"token": "password1"}
    outcome = await reconciler.reconcile_cluster(prod_eu())
    assert outcome.registration is not None
    assert outcome.registration[0] == st.REASON_INVALID_TOKEN
    assert "shorter than 32" in outcome.registration[1]
    assert await tokens(sessions) == []


async def test_one_token_for_two_clusters_is_refused_for_the_second(
    reconciler: Reconciler, secrets: Secrets, sessions: async_sessionmaker[AsyncSession]
) -> None:
    secrets.data[("qualys-system", "shared")] = {"token": TOKEN}
    first = await reconciler.reconcile_cluster(fc("prod-eu", bootstrapTokenSecretRef={"name": "shared"}))
    second = await reconciler.reconcile_cluster(fc("prod-us", bootstrapTokenSecretRef={"name": "shared"}))
    assert first.registration is not None
    assert first.registration[0] == st.REASON_AWAITING_REGISTRATION
    assert second.registration is not None
    assert second.registration[0] == st.REASON_INVALID_TOKEN
    assert "already registered for cluster 'prod-eu'" in second.registration[1]


async def test_pausing_revokes_the_tokens_not_used_yet(
    reconciler: Reconciler, secrets: Secrets, sessions: async_sessionmaker[AsyncSession]
) -> None:
    secrets.data[("qualys-system", "prod-eu-bootstrap")] = {"token": TOKEN}
    await reconciler.reconcile_cluster(prod_eu())
    paused = await reconciler.reconcile_cluster(prod_eu(paused=True))
    assert paused.registration == (st.REASON_PAUSED, "spec.paused is set: no new registration")
    (token,) = await tokens(sessions)
    assert token.revoked_at is not None
    resumed = await reconciler.reconcile_cluster(prod_eu())
    assert resumed.registration is not None
    assert resumed.registration[0] == st.REASON_INVALID_TOKEN
    assert "revoked" in resumed.registration[1]


async def test_an_invalid_cluster_is_not_declared(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outcome = await reconciler.reconcile_cluster(fc("prod-eu", provider="openstack"))
    assert not outcome.ok
    assert outcome.reason == st.REASON_VALIDATION_FAILED
    assert await cluster(sessions, "prod-eu") is None


async def test_deleting_removes_only_clusters_objects_made(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await reconciler.reconcile_cluster(fc("from-crd"))
    async with sessions() as session:
        await declare_cluster(session, "from-api", {}, source="api")
        await session.commit()
    await reconciler.reconcile_cluster(fc("from-api", labels={"env": "prod"}))  # the API's stays the API's
    assert await reconciler.cluster_deleted("from-crd")
    assert not await reconciler.cluster_deleted("from-api")
    assert not await reconciler.cluster_deleted("never-there")
    gone, kept = await cluster(sessions, "from-crd"), await cluster(sessions, "from-api")
    assert gone is not None
    assert gone.removed_at is not None
    assert kept is not None
    assert kept.removed_at is None
    assert kept.source == "api"


async def test_a_cluster_the_api_declared_is_a_conflict_and_left_alone(
    reconciler: Reconciler, secrets: Secrets, sessions: async_sessionmaker[AsyncSession], notify: Counter
) -> None:
    """Once the object replaced the API cluster's placement labels (moving every policy placed by
    them) and registered its Secret's token for it, reporting success."""
    async with sessions() as session:
        api = await declare_cluster(session, "prod-eu", {"env": "prod"}, source="api")
        await session.commit()
    secrets.data[("qualys-system", "prod-eu-bootstrap")] = {"token": TOKEN}
    for obj in (prod_eu(labels={"env": "dev"}), prod_eu(paused=True)):
        outcome = await reconciler.reconcile_cluster(obj)
        assert (outcome.ok, outcome.reason, outcome.retry) == (False, st.REASON_CLUSTER_CONFLICT, False)
        assert f"declared through the api (id {api.id})" in outcome.message
    row = await cluster(sessions, "prod-eu")
    assert row is not None
    assert (row.source, dict(row.labels), row.removed_at) == ("api", {"env": "prod"}, None)
    assert await tokens(sessions) == []
    assert notify.calls == 0
    # once the API removes it, the object may declare the name anew
    async with sessions() as session:
        await remove_cluster(session, "prod-eu")
        await session.commit()
    assert (await reconciler.reconcile_cluster(prod_eu())).ok
    revived = await cluster(sessions, "prod-eu")
    assert revived is not None
    assert revived.source == "crd"


# --------------------------------------------------------------------------- policies


async def test_a_policy_is_applied_and_versioned_by_content(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp())
    assert first.ok
    row = (await policies(sessions))["deny-shadow"]
    assert (row.id, row.generation, row.source, row.created_by, row.kind) == (
        first.policy_id,
        1,
        "crd",
        "crd",
        "TracingPolicy",
    )
    same = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp())
    assert same.policy_id == first.policy_id
    assert (await policies(sessions))["deny-shadow"].generation == 1
    changed = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(enforce=True))
    assert changed.policy_id == first.policy_id
    assert (await policies(sessions))["deny-shadow"].generation == 2
    assert await reconciler.policy_deleted(CrdKind.TRACING_POLICY, "deny-shadow")
    assert "deny-shadow" not in await policies(sessions)


async def test_the_object_suspends_and_resumes_its_policy(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert (await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(suspend=True))).ok
    row = (await policies(sessions))["deny-shadow"]
    assert (row.suspended_by, row.generation) == ("crd", 1)
    assert row.suspended_at is not None
    assert (await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(suspend=False))).ok
    row = (await policies(sessions))["deny-shadow"]
    assert (row.suspended_at, row.generation) == (None, 1)  # not a new generation


async def test_created_suspended_reaches_nobody_and_a_changed_suspended_one_keeps_the_old_generation(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        await declare_cluster(session, "prod-eu", {"env": "prod"}, source="api")
        await session.commit()

    async def served() -> list[int]:
        async with sessions() as session:
            placed = await placed_set(session, "prod-eu", {"env": "prod"})
        return [p.generation for p in placed.policies]

    assert (await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(suspend=True))).ok
    assert await served() == []
    assert (await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp())).ok
    assert await served() == [1]
    # a new spec and suspend in one change: the cluster keeps generation 1
    assert (await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(enforce=True, suspend=True))).ok
    assert (await policies(sessions))["deny-shadow"].generation == 2
    assert await served() == [1]
    assert (await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(enforce=True))).ok
    assert await served() == [2]


async def test_a_name_an_api_policy_holds_is_a_conflict(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from qcdr_federation.hub.controller.convert import policy_spec

    async with sessions() as session:
        api = await apply_spec(
            session, "deny-shadow", policy_spec(CrdKind.TRACING_POLICY, ftp()), source="api", actor="alice"
        )
        await session.commit()
    outcome = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(enforce=True))
    assert not outcome.ok
    assert outcome.reason == st.REASON_POLICY_CONFLICT
    assert "made through the api" in outcome.message
    assert outcome.policy_id is None
    assert not await reconciler.policy_deleted(CrdKind.TRACING_POLICY, "deny-shadow")
    assert await reconciler.collect_garbage(CrdKind.TRACING_POLICY, []) == []
    row = (await policies(sessions))["deny-shadow"]
    assert (row.id, row.generation, row.source) == (api.id, 1, "api")


async def test_the_two_policy_kinds_share_names(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tracing = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp())
    network = await reconciler.reconcile_policy(CrdKind.NETWORK_POLICY, ftp())
    assert tracing.ok
    assert not network.ok
    assert network.reason == st.REASON_POLICY_CONFLICT
    assert "FederatedTracingPolicy" in network.message
    assert not await reconciler.policy_deleted(CrdKind.NETWORK_POLICY, "deny-shadow")
    assert (await policies(sessions))["deny-shadow"].kind == "TracingPolicy"


async def test_a_template_the_hub_refuses_keeps_the_last_good_generation(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await reconciler.reconcile_cluster(fc("prod-eu", labels={"env": "prod"}))
    good = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp())
    bad_patch = [
        {
            "clusterName": "prod-eu",
            "patches": [{"op": "replace", "path": "/spec/kprobes/7/call", "value": "x"}],
        }
    ]
    refused = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(overrides=bad_patch))
    assert not refused.ok
    assert refused.reason == st.REASON_VALIDATION_FAILED
    assert refused.message.startswith(
        "spec.overrides[0].patches: the patches for cluster 'prod-eu' do not apply"
    )
    assert refused.message.endswith("(the hub keeps generation 1)")
    assert refused.policy_id == good.policy_id
    unparsable = await reconciler.reconcile_policy(
        CrdKind.TRACING_POLICY, ftp(overrides=[{"clusterName": "Bad_Name"}])
    )
    assert unparsable.reason == st.REASON_VALIDATION_FAILED
    assert unparsable.message.startswith("spec.overrides[0].clusterName")
    assert (await policies(sessions))["deny-shadow"].generation == 1


async def test_a_nul_in_the_spec_is_validation_failed_naming_the_field(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The CRD schema and the contract let U+0000 through, PostgreSQL's jsonb does not: once a
    retryable ReconcileError every 30 s for ever that never said which field."""
    good = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp())
    refused = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(description="a\x00b"))
    assert (refused.ok, refused.reason, refused.retry) == (False, st.REASON_VALIDATION_FAILED, False)
    assert refused.message.startswith("spec.description: contains a NUL character")
    assert refused.policy_id == good.policy_id
    template = ftp()["spec"]["template"]
    template["spec"]["kprobes"][0]["message"] = "x\x00"
    nested = await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, ftp(template=template))
    assert nested.reason == st.REASON_VALIDATION_FAILED
    assert nested.message.startswith("spec.template.spec.kprobes[0].message: contains a NUL character")
    assert (await policies(sessions))["deny-shadow"].generation == 1


async def test_garbage_collection_removes_only_what_objects_made(
    reconciler: Reconciler, sessions: async_sessionmaker[AsyncSession], notify: Counter
) -> None:
    from qcdr_federation.hub.controller.convert import policy_spec

    def named(name: str) -> dict[str, Any]:
        obj = ftp()
        obj["metadata"]["name"] = name
        return obj

    await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, named("kept"))
    await reconciler.reconcile_policy(CrdKind.TRACING_POLICY, named("orphan"))
    await reconciler.reconcile_policy(CrdKind.NETWORK_POLICY, named("network"))
    await reconciler.reconcile_cluster(fc("kept-cluster"))
    await reconciler.reconcile_cluster(fc("orphan-cluster"))
    async with sessions() as session:
        await apply_spec(
            session, "api-made", policy_spec(CrdKind.TRACING_POLICY, ftp()), source="api", actor="bob"
        )
        await declare_cluster(session, "api-cluster", {}, source="api")
        await session.commit()
    before = notify.calls
    assert await reconciler.collect_garbage(CrdKind.TRACING_POLICY, ["kept"]) == ["orphan"]
    assert await reconciler.collect_garbage(CrdKind.CLUSTER, ["kept-cluster"]) == ["orphan-cluster"]
    assert await reconciler.collect_garbage(CrdKind.TRACING_POLICY, ["kept"]) == []
    assert notify.calls == before + 2
    assert set(await policies(sessions)) == {"kept", "network", "api-made"}
    api_cluster = await cluster(sessions, "api-cluster")
    assert api_cluster is not None
    assert api_cluster.removed_at is None
