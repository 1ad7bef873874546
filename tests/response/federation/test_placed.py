"""Placed policies through the handler (real PostgreSQL, rolled back): proposed or enforced,
versions per generation, idempotency, validation and conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.federation.handlers import FederatedPoliciesHandler, MalformedPolicyMessageError
from qcdr_response.federation.service import Federation
from qcdr_response.lifecycle import transitions
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.models import FindingPolicyRow, PolicyRow, PolicyVersionRow
from qcdr_response.worker import make_federation, make_lifecycle
from sqlalchemy import func, select

from tests.response.federation.conftest import (
    Sessions,
    deliveries,
    hub_hash,
    network_manifest,
    outbox_events,
    placed,
    tracing_manifest,
)
from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

TPN = "TracingPolicyNamespaced"


def federation(cluster: ClusterGateway | None = None) -> Federation:
    return make_federation(response_settings(cluster_id="spoke-a"), cluster)


def handler(sessions: Sessions, cluster: ClusterGateway | None = None) -> FederatedPoliciesHandler:
    return FederatedPoliciesHandler(sessions, federation(cluster))


async def policies(sessions: Sessions) -> list[PolicyRow]:
    async with sessions() as session:
        return list((await session.scalars(select(PolicyRow).order_by(PolicyRow.id))).all())


async def versions(sessions: Sessions, policy_id: int) -> list[PolicyVersionRow]:
    async with sessions() as session:
        stmt = select(PolicyVersionRow).where(PolicyVersionRow.policy_id == policy_id)
        return list((await session.scalars(stmt.order_by(PolicyVersionRow.version))).all())


def origin(policy_id: str, generation: int, manifest: dict[str, Any]) -> dict[str, Any]:
    return {"policy_id": policy_id, "generation": generation, "content_hash": hub_hash(manifest)}


async def test_a_placed_policy_becomes_a_proposed_federated_policy(sessions: Sessions) -> None:
    manifest = tracing_manifest()
    await handler(sessions)(deliveries(placed(manifest)))

    [policy] = await policies(sessions)
    assert (policy.kind, policy.namespace, policy.name) == (TPN, "payments", "fed-block-c2")
    assert (policy.family, policy.status, policy.current_version) == ("federated", "proposed", 1)
    assert policy.applied_version is None
    assert policy.status_reason is not None
    assert "approve it here" in policy.status_reason
    assert policy.federation is not None
    assert policy.federation["enforce"] is False
    [version] = await versions(sessions, policy.id)
    assert version.body == manifest
    assert version.filename == "cdr-federated-fed-block-c2.yaml"
    assert "kind: TracingPolicyNamespaced" in version.yaml

    events = await outbox_events(sessions)
    assert [t for t, _ in events] == ["response.policy_changed", "response.policy_status_changed"]
    changed, status = (p for _, p in events)
    assert changed["federation"] == origin("fp-0001", 1, manifest)
    assert (changed["family"], changed["version"], changed["status"]) == ("federated", 1, "proposed")
    assert status["federation"] == origin("fp-0001", 1, manifest)
    assert (status["from_status"], status["to_status"]) == (None, "proposed")


async def test_a_new_generation_makes_a_new_version_and_an_older_one_is_ignored(sessions: Sessions) -> None:
    first = tracing_manifest(generation=1)
    second = tracing_manifest(generation=2, port="5555")
    await handler(sessions)(deliveries(placed(first), placed(second, generation=2)))
    [policy] = await policies(sessions)
    assert (policy.current_version, policy.status) == (2, "proposed")
    assert policy.federation is not None
    assert policy.federation["generation"] == 2
    assert [v.body for v in await versions(sessions, policy.id)] == [first, second]
    events = await outbox_events(sessions)
    assert [(t, p["federation"]["generation"]) for t, p in events] == [
        ("response.policy_changed", 1),
        ("response.policy_status_changed", 1),
        ("response.policy_changed", 2),  # proposed stays proposed: no status event
    ]
    assert events[-1][1]["version"] == 2

    # a late copy of generation 1 (another envelope id) changes nothing
    await handler(sessions)(deliveries(placed(first)))
    [policy] = await policies(sessions)
    assert (policy.current_version, policy.federation["generation"]) == (2, 2)  # type: ignore[index]
    assert len(await outbox_events(sessions)) == 3


async def test_the_same_envelope_twice_is_handled_once(sessions: Sessions) -> None:
    envelope = placed(tracing_manifest())
    await handler(sessions)(deliveries(envelope))
    await handler(sessions)(deliveries(envelope, envelope))
    assert len(await policies(sessions)) == 1
    assert len(await outbox_events(sessions)) == 2


async def test_the_same_generation_again_under_a_new_envelope_changes_nothing(sessions: Sessions) -> None:
    manifest = tracing_manifest()
    await handler(sessions)(deliveries(placed(manifest), placed(manifest)))
    [policy] = await policies(sessions)
    assert policy.current_version == 1
    assert len(await outbox_events(sessions)) == 2


async def test_enforced_without_a_cluster_is_approved(sessions: Sessions) -> None:
    await handler(sessions)(deliveries(placed(network_manifest(), enforce=True)))
    [policy] = await policies(sessions)
    assert (policy.kind, policy.status, policy.applied_version) == ("CiliumNetworkPolicy", "approved", None)
    assert policy.status_reason is not None
    assert "enforced by the federation hub" in policy.status_reason


async def test_enforced_is_applied_to_the_cluster(
    sessions: Sessions, k8s: K8sTestServer, cluster: ClusterGateway
) -> None:
    manifest = tracing_manifest(policy_id="fp-0042")
    await handler(sessions, cluster)(deliveries(placed(manifest, policy_id="fp-0042", enforce=True)))

    [policy] = await policies(sessions)
    assert (policy.status, policy.applied_version) == ("applied", 1)
    assert policy.status_reason == "applied: enforced by the federation hub: version 1 created in the cluster"
    stored = k8s.objects(TPN)[("payments", "fed-block-c2")]
    assert stored["metadata"]["labels"] == manifest["metadata"]["labels"]
    assert stored["metadata"]["labels"]["federation.qualys.com/policy-id"] == "fp-0042"
    assert stored["spec"] == manifest["spec"]

    events = await outbox_events(sessions)
    statuses = [(p["from_status"], p["to_status"]) for t, p in events if t.endswith("status_changed")]
    assert statuses == [(None, "approved"), ("approved", "applied")]
    assert all(p["federation"] == origin("fp-0042", 1, manifest) for _, p in events)

    # generation 2 is applied over it at once
    second = tracing_manifest(policy_id="fp-0042", generation=2, port="6666")
    await handler(sessions, cluster)(
        deliveries(placed(second, policy_id="fp-0042", generation=2, enforce=True))
    )
    [policy] = await policies(sessions)
    assert (policy.status, policy.current_version, policy.applied_version) == ("applied", 2, 2)
    stored = k8s.objects(TPN)[("payments", "fed-block-c2")]
    assert stored["metadata"]["annotations"]["federation.qualys.com/generation"] == "2"


async def test_a_cluster_that_refuses_leaves_it_approved_and_says_so(sessions: Sessions) -> None:
    server = K8sTestServer(installed=[("", "v1", "Namespace")])  # no Tetragon CRDs
    with server.serve():
        gateway = ClusterGateway(server.async_client)
        try:
            await handler(sessions, gateway)(deliveries(placed(tracing_manifest(), enforce=True)))
        finally:
            await gateway.close()
    [policy] = await policies(sessions)
    assert (policy.status, policy.applied_version) == ("approved", None)
    events = await outbox_events(sessions)
    assert [t for t, _ in events] == [
        "response.policy_changed",
        "response.policy_status_changed",
        "response.policy_rejected",
    ]
    rejected = events[-1][1]
    assert rejected["stage"] == "apply"
    assert "server-side apply failed" in rejected["reason"]
    assert (rejected["kind"], rejected["namespace"], rejected["name"]) == (TPN, "payments", "fed-block-c2")


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        pytest.param(
            tracing_manifest() | {"spec": {"kprobes": [{"call": "tcp_connect", "syscall": False,
                                                        "args": [{"index": 0, "type": "wibble"}]}]}},
            "'wibble' is not a Tetragon argument type",
            id="unknown-arg-type",
        ),
        pytest.param(
            network_manifest(namespace=None),
            "CiliumNetworkPolicy is namespaced: metadata.namespace must be a non-empty string",
            id="cnp-without-namespace",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "payments"}},
            "a federated policy is one of",
            id="not-a-policy-kind",
        ),
        pytest.param(
            tracing_manifest() | {"apiVersion": "cilium.io/v2"},
            "apiVersion: TracingPolicyNamespaced is cilium.io/v1alpha1",
            id="wrong-api-version",
        ),
        pytest.param(
            tracing_manifest()
            | {"spec": {"kprobes": [{"call": "sys_execve", "syscall": True,
                                     "args": [{"index": 0, "type": "string"}],
                                     "selectors": [{"matchActions": [{"action": "Sigkill"}]}]}]}},
            "lint (the policy enforces): QCDR-L001",
            id="lint-kill-every-exec",
        ),
    ],
)  # fmt: skip
async def test_an_invalid_manifest_is_rejected_and_nothing_is_stored(
    sessions: Sessions, manifest: dict[str, Any], says: str
) -> None:
    await handler(sessions)(deliveries(placed(manifest, generation=3)))
    assert await policies(sessions) == []
    [(type_, payload)] = await outbox_events(sessions)
    assert type_ == "response.policy_rejected"
    assert payload["stage"] == "validation"
    assert says in payload["reason"]
    assert payload["federation"] == origin("fp-0001", 3, manifest)
    assert payload["name"] == manifest["metadata"].get("name")


async def test_an_invalid_new_generation_keeps_the_version_held(sessions: Sessions) -> None:
    good = tracing_manifest()
    bad = tracing_manifest(generation=2) | {"spec": {"kprobes": "nope"}}
    await handler(sessions)(deliveries(placed(good), placed(bad, generation=2)))
    [policy] = await policies(sessions)
    assert (policy.current_version, policy.federation["generation"]) == (1, 1)  # type: ignore[index]
    types = [t for t, _ in await outbox_events(sessions)]
    assert types[-1] == "response.policy_rejected"


async def test_a_generated_policy_with_the_same_identity_is_left_alone(sessions: Sessions) -> None:
    lc = make_lifecycle(response_settings())
    async with sessions.begin() as session:
        await handle_envelopes(session, [finding_envelope(make_finding())], lc)
    [generated] = await policies(sessions)
    before = await outbox_events(sessions)

    manifest = tracing_manifest(name=generated.name, namespace=generated.namespace)
    await handler(sessions)(deliveries(placed(manifest, enforce=True)))

    [still] = await policies(sessions)
    assert (still.id, still.family, still.status, still.current_version) == (
        generated.id,
        generated.family,
        "proposed",
        1,
    )
    assert still.federation is None
    events = await outbox_events(sessions)
    assert events[: len(before)] == before
    [(type_, payload)] = events[len(before) :]
    assert type_ == "response.policy_rejected"
    assert payload["stage"] == "conflict"
    assert "did not come from the hub" in payload["reason"]
    assert generated.family in payload["reason"]


async def test_findings_never_write_over_a_federated_policy(sessions: Sessions) -> None:
    # the object the network-scan generator makes for namespace payments
    manifest = tracing_manifest(name="cdr-block-network-scan")
    await handler(sessions)(deliveries(placed(manifest)))
    lc = make_lifecycle(response_settings())
    async with sessions.begin() as session:
        outcome = await handle_envelopes(session, [finding_envelope(make_finding())], lc)
    assert outcome.versions == []
    [policy] = await policies(sessions)
    assert (policy.family, policy.current_version) == ("federated", 1)
    async with sessions() as session:
        link = (await session.scalars(select(FindingPolicyRow))).one()
    assert link.outcome == "dropped"
    assert link.reason == f"{TPN}/payments/cdr-block-network-scan is a federated policy (placed by the hub)"


async def test_two_federated_policies_cannot_place_the_same_object(sessions: Sessions) -> None:
    manifest = tracing_manifest()
    await handler(sessions)(
        deliveries(placed(manifest, policy_id="fp-a"), placed(manifest, policy_id="fp-b"))
    )
    [policy] = await policies(sessions)
    assert policy.federation is not None
    assert policy.federation["policy_id"] == "fp-a"
    type_, payload = (await outbox_events(sessions))[-1]
    assert (type_, payload["stage"]) == ("response.policy_rejected", "conflict")
    assert payload["federation"]["policy_id"] == "fp-b"
    assert "already held by federated policy fp-a" in payload["reason"]


async def test_a_policy_revoked_here_waits_for_approval_again(sessions: Sessions) -> None:
    await handler(sessions)(deliveries(placed(tracing_manifest(), enforce=True)))
    [policy] = await policies(sessions)
    async with sessions.begin() as session:
        await transitions.revoke(session, policy.id, None, cluster_id="spoke-a", reason="not here")
    second = tracing_manifest(generation=2, port="5555")
    await handler(sessions)(deliveries(placed(second, generation=2, enforce=True)))
    [policy] = await policies(sessions)
    assert (policy.status, policy.current_version) == ("proposed", 2)
    assert policy.status_reason is not None
    assert "revoked here" in policy.status_reason


async def test_a_local_approval_then_an_enforced_generation(sessions: Sessions) -> None:
    await handler(sessions)(deliveries(placed(tracing_manifest())))
    [policy] = await policies(sessions)
    async with sessions.begin() as session:
        await transitions.approve(session, policy.id, cluster_id="spoke-a")
    # the hub stops asking for local approval: still approved, now at generation 2
    second = tracing_manifest(generation=2)
    await handler(sessions)(deliveries(placed(second, generation=2, enforce=True)))
    [policy] = await policies(sessions)
    assert (policy.status, policy.current_version) == ("approved", 2)
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(PolicyVersionRow))
    assert count == 2


async def test_malformed_messages_fail_after_the_good_ones_commit(sessions: Sessions) -> None:
    good = placed(tracing_manifest())
    broken = good.model_copy(update={"id": "broken-1", "payload": {"policy_id": "fp-x"}})
    other = good.model_copy(update={"id": "other-1", "type": "federation.something_else"})
    with pytest.raises(MalformedPolicyMessageError, match="broken-1"):
        await handler(sessions)(deliveries(broken, good, other))
    assert len(await policies(sessions)) == 1
