"""Removed federated policies: revoked, deleted from the cluster when applied, placed again."""

from __future__ import annotations

import pytest
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.federation.handlers import FederatedPoliciesHandler
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.models import PolicyRow
from qcdr_response.worker import make_federation
from sqlalchemy import select

from tests.response.federation.conftest import (
    Sessions,
    deliveries,
    network_manifest,
    outbox_events,
    placed,
    removed,
    tracing_manifest,
)
from tests.response.service.conftest import response_settings

pytestmark = pytest.mark.db

TPN = "TracingPolicyNamespaced"


def handler(sessions: Sessions, cluster: ClusterGateway | None = None) -> FederatedPoliciesHandler:
    return FederatedPoliciesHandler(sessions, make_federation(response_settings(), cluster))


async def the_policy(sessions: Sessions) -> PolicyRow:
    async with sessions() as session:
        return (await session.scalars(select(PolicyRow))).one()


async def test_removed_revokes_a_proposed_policy(sessions: Sessions) -> None:
    manifest = network_manifest()
    await handler(sessions)(deliveries(placed(manifest), removed(manifest)))
    policy = await the_policy(sessions)
    assert (policy.status, policy.applied_version) == ("revoked", None)
    assert policy.status_reason is not None
    assert "the federation hub removed federated policy fp-0001" in (policy.status_reason)
    assert policy.federation is not None
    assert policy.federation["removed"] is True
    type_, payload = (await outbox_events(sessions))[-1]
    assert type_ == "response.policy_status_changed"
    assert (payload["from_status"], payload["to_status"]) == ("proposed", "revoked")
    assert payload["federation"]["policy_id"] == "fp-0001"


async def test_removed_deletes_an_applied_policy_from_the_cluster(
    sessions: Sessions, k8s: K8sTestServer, cluster: ClusterGateway
) -> None:
    manifest = tracing_manifest()
    await handler(sessions, cluster)(deliveries(placed(manifest, enforce=True)))
    assert ("payments", "fed-block-c2") in k8s.objects(TPN)

    await handler(sessions, cluster)(deliveries(removed(manifest)))
    policy = await the_policy(sessions)
    assert (policy.status, policy.applied_version) == ("revoked", None)
    assert "deleted TracingPolicyNamespaced/payments/fed-block-c2 from the cluster" in (
        policy.status_reason or ""
    )
    assert k8s.objects(TPN) == {}

    # placed again later (the placement changed back): a new decision of the hub, applied again
    await handler(sessions, cluster)(deliveries(placed(manifest, enforce=True)))
    policy = await the_policy(sessions)
    assert (policy.status, policy.current_version, policy.applied_version) == ("applied", 1, 1)
    assert policy.federation is not None
    assert policy.federation["removed"] is False
    assert ("payments", "fed-block-c2") in k8s.objects(TPN)


async def test_removing_what_is_not_held_here_does_nothing(sessions: Sessions) -> None:
    manifest = tracing_manifest()
    await handler(sessions)(deliveries(removed(manifest)))  # never placed
    await handler(sessions)(deliveries(placed(manifest, policy_id="fp-a")))
    await handler(sessions)(deliveries(removed(manifest, policy_id="fp-b")))  # another hub policy
    policy = await the_policy(sessions)
    assert policy.status == "proposed"
    assert [t for t, _ in await outbox_events(sessions)] == [
        "response.policy_changed",
        "response.policy_status_changed",
    ]


async def test_removing_an_applied_policy_without_a_cluster_is_reported(
    sessions: Sessions, cluster: ClusterGateway
) -> None:
    manifest = tracing_manifest()
    await handler(sessions, cluster)(deliveries(placed(manifest, enforce=True)))
    await handler(sessions, None)(deliveries(removed(manifest)))
    policy = await the_policy(sessions)
    assert policy.status == "applied"
    type_, payload = (await outbox_events(sessions))[-1]
    assert (type_, payload["stage"]) == ("response.policy_rejected", "apply")
    assert payload["reason"].startswith("could not remove it: version 1 is applied in the cluster")
    assert payload["federation"]["generation"] == 1


async def test_after_a_removal_an_older_generation_stays_out_and_another_policy_may_take_over(
    sessions: Sessions,
) -> None:
    first = tracing_manifest(generation=1)
    second = tracing_manifest(generation=2, port="5555")
    await handler(sessions)(deliveries(placed(first), placed(second, generation=2), removed(second)))
    await handler(sessions)(deliveries(placed(first)))  # a late generation 1
    policy = await the_policy(sessions)
    assert (policy.status, policy.current_version) == ("revoked", 2)

    # the hub's policy was deleted and made again (a new id): it takes the object over
    third = tracing_manifest(policy_id="fp-0002", port="7777")
    await handler(sessions)(deliveries(placed(third, policy_id="fp-0002", enforce=True)))
    policy = await the_policy(sessions)
    assert (policy.status, policy.current_version) == ("approved", 3)
    assert policy.federation is not None
    assert (policy.federation["policy_id"], policy.federation["generation"]) == ("fp-0002", 1)
    type_, payload = (await outbox_events(sessions))[-1]
    assert (type_, payload["from_status"], payload["to_status"]) == (
        "response.policy_status_changed",
        "revoked",
        "approved",
    )


async def test_messages_handled_out_of_order_are_judged_by_the_spokes_sequence(
    sessions: Sessions, k8s: K8sTestServer, cluster: ClusterGateway
) -> None:
    """Replicas and redeliveries can hand the messages of one policy over in another order than the
    spoke sent them: the older one never wins, whichever comes second."""
    manifest = tracing_manifest()
    # a removal (set 3) handled before the placement it follows (set 2): the policy never appears
    await handler(sessions, cluster)(deliveries(removed(manifest, sequence=3)))
    await handler(sessions, cluster)(deliveries(placed(manifest, enforce=True, sequence=2)))
    async with sessions() as session:
        assert (await session.scalars(select(PolicyRow))).all() == []
    assert ("payments", "fed-block-c2") not in k8s.objects(TPN)

    # placed again later (set 4): a decision after the removal, applied
    await handler(sessions, cluster)(deliveries(placed(manifest, enforce=True, generation=2, sequence=4)))
    assert (await the_policy(sessions)).status == "applied"
    # a removal from before that placement (set 3, redelivered under another envelope) changes nothing
    await handler(sessions, cluster)(deliveries(removed(manifest, sequence=3)))
    assert (await the_policy(sessions)).status == "applied"
    assert ("payments", "fed-block-c2") in k8s.objects(TPN)

    # removed (set 5), then a placement from before it (set 4) comes back: it stays removed
    await handler(sessions, cluster)(deliveries(removed(manifest, sequence=5)))
    await handler(sessions, cluster)(deliveries(placed(manifest, enforce=True, generation=2, sequence=4)))
    assert (await the_policy(sessions)).status == "revoked"
    assert ("payments", "fed-block-c2") not in k8s.objects(TPN)


async def test_messages_without_a_sequence_keep_the_old_rules(sessions: Sessions) -> None:
    """A spoke older than the sequence numbers: a removal of a policy not held is ignored, and the
    placement after it is taken."""
    manifest = network_manifest()
    await handler(sessions)(deliveries(removed(manifest), placed(manifest)))
    assert (await the_policy(sessions)).status == "proposed"
