"""What the controller writes to ``.status``: conditions, their transition times, and patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from qcdr_common.contracts.federation.v1 import ClusterHealth, PolicyApplyState
from qcdr_federation.hub.clusters.schemas import ClusterRead
from qcdr_federation.hub.controller import status as st
from qcdr_federation.hub.policies.schemas import ClusterPolicyStatus, FederatedPolicyStatus, PolicyCell

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def view(health: ClusterHealth, **overrides: Any) -> ClusterRead:
    values: dict[str, Any] = {
        "name": "prod-eu",
        "id": "cl-1",
        "labels": {},
        "source": "crd",
        "health": health,
        "health_changed_at": None,
        "registered_at": None if health is ClusterHealth.PENDING else NOW - timedelta(hours=1),
        "last_heartbeat_at": None if health is ClusterHealth.PENDING else NOW - timedelta(seconds=5),
        "version": "1.2.3",
        "kubernetes_version": "v1.31.0",
        "node_count": 3,
        "pod_count": 10,
        "counts": {},
        "problems": [],
    }
    values.update(overrides)
    return ClusterRead(**values)


def conditions(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in body["conditions"]}


@pytest.mark.parametrize(
    ("health", "ready"),
    [
        (ClusterHealth.PENDING, ("False", "AwaitingRegistration")),
        (ClusterHealth.HEALTHY, ("True", "Heartbeat")),
        (ClusterHealth.DEGRADED, ("False", "ClusterDegraded")),
        (ClusterHealth.OFFLINE, ("False", "ClusterOffline")),
    ],
)
def test_ready_follows_the_health(health: ClusterHealth, ready: tuple[str, str]) -> None:
    body = st.cluster_status(st.Outcome(2, ok=True), view(health), generation=2, previous=None, now=NOW)
    assert body["state"] == health.value
    assert conditions(body)["Ready"] == ready
    registered = health is not ClusterHealth.PENDING
    assert body["registered"] is registered
    assert conditions(body)["Registered"][0] == ("True" if registered else "False")
    assert body["observedGeneration"] == 2


def test_degraded_says_why() -> None:
    cells = {
        "fp-1": PolicyCell(
            policy_id="fp-1", name="deny", desired_generation=1, generation=1, state="failed", in_sync=False
        )
    }
    body = st.cluster_status(
        st.Outcome(1, ok=True),
        view(ClusterHealth.DEGRADED, problems=["response API 503"], policies=cells),
        generation=1,
        previous=None,
        now=NOW,
    )
    (ready,) = [c for c in body["conditions"] if c["type"] == "Ready"]
    assert ready["message"] == "response API 503; failed policies: deny"
    assert body["problems"] == ["response API 503"]
    assert body["policies"] == [{"name": "deny", "state": "failed", "generation": 1, "inSync": False}]


def test_registration_reason_comes_from_the_reconcile_until_the_spoke_registers() -> None:
    outcome = st.Outcome(1, ok=True, registration=(st.REASON_SECRET_NOT_FOUND, "Secret x/y does not exist"))
    body = st.cluster_status(outcome, view(ClusterHealth.PENDING), generation=1, previous=None, now=NOW)
    assert conditions(body)["Registered"] == ("False", "SecretNotFound")
    registered = st.cluster_status(outcome, view(ClusterHealth.HEALTHY), generation=1, previous=None, now=NOW)
    assert conditions(registered)["Registered"] == ("True", "Registered")


def test_an_invalid_cluster_says_so_in_both_conditions() -> None:
    outcome = st.Outcome(4, ok=False, reason=st.REASON_VALIDATION_FAILED, message="spec.provider ...")
    body = st.cluster_status(outcome, None, generation=4, previous=None, now=NOW)
    assert conditions(body) == {
        "Registered": ("False", "ValidationFailed"),
        "Ready": ("False", "ValidationFailed"),
    }
    assert body["state"] == "pending"


def test_a_conflicting_cluster_object_shows_none_of_the_api_clusters_state() -> None:
    """The hub cluster of that name is the REST API's: its registration and heartbeats are not
    this object's (once it read Registered=True for a cluster it had failed to take over)."""
    outcome = st.Outcome(2, ok=False, reason=st.REASON_CLUSTER_CONFLICT, message="declared through the api")
    body = st.cluster_status(outcome, view(ClusterHealth.HEALTHY), generation=2, previous=None, now=NOW)
    assert conditions(body) == {
        "Registered": ("False", "ClusterConflict"),
        "Ready": ("False", "ClusterConflict"),
    }
    assert (body["registered"], body["state"]) == (False, "pending")
    assert "lastHeartbeat" not in body


def test_transition_time_moves_only_when_the_status_does() -> None:
    first = st.cluster_status(
        st.Outcome(1, ok=True), view(ClusterHealth.HEALTHY), generation=1, previous=None, now=NOW
    )
    again = st.cluster_status(
        st.Outcome(1, ok=True), view(ClusterHealth.HEALTHY), generation=1, previous=first, now=LATER
    )
    assert again == first
    assert st.status_patch(first, again) is None
    offline = st.cluster_status(
        st.Outcome(1, ok=True), view(ClusterHealth.OFFLINE), generation=1, previous=again, now=LATER
    )
    times = {c["type"]: c["lastTransitionTime"] for c in offline["conditions"]}
    assert times == {"Registered": "2025-03-01T12:00:00Z", "Ready": "2025-03-01T12:05:00Z"}


def test_status_patch_nulls_what_is_gone() -> None:
    assert st.status_patch({"a": 1, "b": [1]}, {"a": 1, "b": [1]}) is None
    assert st.status_patch({"a": 1, "b": 2}, {"a": 1}) == {"a": 1, "b": None}
    assert st.status_patch(None, {"a": 1}) == {"a": 1}


def test_rfc3339() -> None:
    assert st.rfc3339(datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)) == "2025-01-02T03:04:05Z"
    assert st.rfc3339(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05Z"
    assert st.rfc3339(None) is None
    # a spoke may report any aware datetime: the API server takes only a four-digit year
    assert st.rfc3339(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert st.rfc3339(datetime(999, 1, 1, 0, 0, 0)) == "0999-01-01T00:00:00Z"
    east = timezone(timedelta(hours=1))  # UTC would be year 0: the earliest time there is
    assert st.rfc3339(datetime(1, 1, 1, tzinfo=east)) == "0001-01-01T00:00:00Z"


# --------------------------------------------------------------------------- policies


def entry(
    cluster: str,
    state: Any,
    in_sync: bool,
    *,
    generation: int | None = 2,
    placed: bool = True,
    message: str | None = None,
) -> ClusterPolicyStatus:
    return ClusterPolicyStatus(
        cluster=cluster,
        placed=placed,
        desired_hash="h" if placed else None,
        generation=generation,
        content_hash="h",
        state=state,
        in_sync=in_sync,
        message=message,
        observed_at=NOW,
    )


def policy(*entries: ClusterPolicyStatus) -> FederatedPolicyStatus:
    return FederatedPolicyStatus(id="fp-1", name="deny", generation=2, clusters=list(entries))


def synced(body: dict[str, Any]) -> tuple[str, str, str]:
    (cond,) = body["conditions"]
    assert cond["type"] == "Synced"
    return cond["status"], cond["reason"], cond["message"]


OK = st.Outcome(5, ok=True, policy_id="fp-1")


def test_synced_when_every_placed_cluster_is_in_sync() -> None:
    body = st.policy_status_body(
        OK,
        policy(
            entry("a", PolicyApplyState.APPLIED, True),
            entry("b", PolicyApplyState.PROPOSED, True),
            entry("old", PolicyApplyState.REVOKED, False, placed=False),
        ),
        generation=5,
        previous=None,
        now=NOW,
    )
    assert synced(body) == ("True", "SyncSuccess", "generation 2 in sync on 2 clusters")
    assert body["policyId"] == "fp-1"
    assert body["hubGeneration"] == 2
    assert (body["placedClusters"], body["syncedClusters"]) == (2, 2)
    assert [c["clusterName"] for c in body["clusterStatuses"]] == ["a", "b", "old"]
    assert body["observedGeneration"] == 5


def test_pending_until_every_placed_cluster_reports() -> None:
    body = st.policy_status_body(
        OK,
        policy(entry("a", PolicyApplyState.APPLIED, True), entry("b", "pending", False, generation=None)),
        generation=5,
        previous=None,
        now=NOW,
    )
    assert synced(body) == ("False", "SyncPending", "generation 2 not yet in sync on b")
    assert body["clusterStatuses"][1] == {
        "clusterName": "b",
        "state": "pending",
        "inSync": False,
        "lastSyncTime": "2025-03-01T12:00:00Z",
    }


def test_failed_on_the_current_generation_only() -> None:
    failing = policy(
        entry("a", PolicyApplyState.FAILED, False, message="unknown hook"), entry("b", "pending", False)
    )
    assert synced(st.policy_status_body(OK, failing, generation=5, previous=None, now=NOW)) == (
        "False",
        "SyncFailed",
        "generation 2 failed on a: unknown hook",
    )
    stale = policy(entry("a", PolicyApplyState.FAILED, False, generation=1))
    assert synced(st.policy_status_body(OK, stale, generation=5, previous=None, now=NOW))[1] == "SyncPending"


def test_no_cluster_placed_is_in_sync() -> None:
    body = st.policy_status_body(OK, policy(), generation=5, previous=None, now=NOW)
    assert synced(body) == ("True", "SyncSuccess", "no cluster is placed")
    assert body["placedClusters"] == 0


def test_a_refused_object_keeps_the_hub_policy_status_but_is_not_synced() -> None:
    outcome = st.Outcome(
        6, ok=False, reason=st.REASON_VALIDATION_FAILED, message="bad patch", policy_id="fp-1"
    )
    body = st.policy_status_body(
        outcome, policy(entry("a", PolicyApplyState.APPLIED, True)), generation=6, previous=None, now=NOW
    )
    assert synced(body) == ("False", "ValidationFailed", "bad patch")
    assert body["policyId"] == "fp-1"
    assert body["observedGeneration"] == 6


def test_long_messages_are_clipped() -> None:
    outcome = st.Outcome(1, ok=False, reason=st.REASON_POLICY_CONFLICT, message="x" * 5000)
    body = st.policy_status_body(outcome, None, generation=1, previous=None, now=NOW)
    assert len(body["conditions"][0]["message"]) == 2000
