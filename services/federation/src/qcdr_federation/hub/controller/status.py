"""What the controller writes to ``.status`` of each federation object: built from the hub's own
views (``cluster_view`` / ``policy_status``) and the last reconcile's outcome. Pure functions.

Conditions follow ``metav1.Condition``: ``lastTransitionTime`` moves only when a condition's
status changes, so an unchanged status compares equal and is not patched again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qcdr_common.contracts.federation.v1 import ClusterHealth, PolicyApplyState

from qcdr_federation.hub.clusters.schemas import ClusterRead
from qcdr_federation.hub.policies.rollout import RolloutProgress
from qcdr_federation.hub.policies.schemas import FederatedPolicyStatus

# condition types and reasons (the original's Go types named Ready, Synced, SyncSuccess,
# SyncFailed, PolicyConflict and ValidationFailed; the rest, ClusterConflict too, are this controller's)
READY = "Ready"
REGISTERED = "Registered"
SYNCED = "Synced"

REASON_REGISTERED = "Registered"
REASON_AWAITING_REGISTRATION = "AwaitingRegistration"
REASON_HEARTBEAT = "Heartbeat"
REASON_DEGRADED = "ClusterDegraded"
REASON_OFFLINE = "ClusterOffline"
REASON_PAUSED = "Paused"
REASON_SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 (a reason, not a secret)
REASON_SECRET_FORBIDDEN = "SecretForbidden"  # noqa: S105
REASON_SECRET_KEY_MISSING = "SecretKeyMissing"  # noqa: S105
REASON_INVALID_TOKEN = "InvalidBootstrapToken"  # noqa: S105
REASON_SYNC_SUCCESS = "SyncSuccess"
REASON_SYNC_PENDING = "SyncPending"
REASON_SYNC_FAILED = "SyncFailed"
REASON_VALIDATION_FAILED = "ValidationFailed"
REASON_POLICY_CONFLICT = "PolicyConflict"
REASON_CLUSTER_CONFLICT = "ClusterConflict"
REASON_RECONCILE_ERROR = "ReconcileError"

_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Outcome:
    """The result of the last reconcile of one object.

    ``ok``: the hub holds what the object's ``generation`` says. Otherwise ``reason`` and
    ``message`` say why not (``ValidationFailed``, ``ClusterConflict``, ``PolicyConflict``,
    ``ReconcileError``).
    ``registration`` (clusters): why the cluster is not registered yet, as a (reason, message)
    pair when it is the controller's doing (no Secret, paused, ...). ``policy_id``: the hub policy.
    """

    generation: int
    ok: bool
    reason: str = ""
    message: str = ""
    registration: tuple[str, str] | None = None
    policy_id: str | None = None
    retry: bool = False


def rfc3339(value: datetime | None) -> str | None:
    """``metav1.Time``: UTC, whole seconds, ``Z``, a four-digit year (``strftime("%Y")`` writes
    year 1 as "1", which the API server refuses)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, or 9999 west of it
        utc = datetime.min if value.year == 1 else datetime.max
    return utc.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _clip(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    previous: Iterable[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    value = "True" if status else "False"
    since = rfc3339(now)
    for old in previous:
        if isinstance(old, Mapping) and old.get("type") == type_ and old.get("status") == value:
            since = str(old.get("lastTransitionTime") or since)
            break
    return {
        "type": type_,
        "status": value,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": _clip(message),
    }


def _previous_conditions(previous: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    conditions = (previous or {}).get("conditions")
    return [c for c in conditions if isinstance(c, Mapping)] if isinstance(conditions, list) else []


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


# --------------------------------------------------------------------------- clusters


def cluster_status(
    outcome: Outcome | None,
    view: ClusterRead | None,
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """``.status`` of a ``FederatedCluster``: the hub's view of the cluster, and two conditions:
    ``Registered`` (a spoke exchanged a bootstrap token) and ``Ready`` (heartbeats arrive and the
    spoke reports nothing wrong)."""
    old = _previous_conditions(previous)
    # what the hub's state reflects: the generation last reconciled
    generation = outcome.generation if outcome else generation
    body: dict[str, Any] = {"observedGeneration": generation}
    if outcome is not None and outcome.reason == REASON_CLUSTER_CONFLICT:
        view = None  # the hub's cluster of that name is the API's, not this object's
    if view is not None:
        cells = sorted(view.policies.values(), key=lambda c: c.name)
        body.update(
            registered=view.registered_at is not None,
            registeredAt=rfc3339(view.registered_at),
            state=view.health.value,
            lastHeartbeat=rfc3339(view.last_heartbeat_at),
            version=view.version or None,
            kubernetesVersion=view.kubernetes_version or None,
            nodeCount=view.node_count,
            podCount=view.pod_count,
            syncedPolicies=sum(1 for c in cells if c.in_sync),
            policies=[
                _drop_none(
                    {"name": c.name, "state": str(c.state), "generation": c.generation, "inSync": c.in_sync}
                )
                for c in cells
            ],
            problems=list(view.problems) or None,
        )
    else:
        body.update(registered=False, state=ClusterHealth.PENDING.value)
    conditions = [
        _registered_condition(outcome, view, generation=generation, previous=old, now=now),
        _ready_condition(outcome, view, generation=generation, previous=old, now=now),
    ]
    body["conditions"] = conditions
    return _drop_none(body)


def _registered_condition(
    outcome: Outcome | None,
    view: ClusterRead | None,
    *,
    generation: int,
    previous: list[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    def make(status: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(
            REGISTERED, status, reason, message, generation=generation, previous=previous, now=now
        )

    if view is not None and view.registered_at is not None:
        return make(True, REASON_REGISTERED, f"registered at {rfc3339(view.registered_at)}")
    if outcome is not None and not outcome.ok:
        return make(False, outcome.reason, outcome.message)
    if outcome is not None and outcome.registration is not None:
        return make(False, *outcome.registration)
    return make(False, REASON_AWAITING_REGISTRATION, "waiting for the spoke to register")


def _ready_condition(
    outcome: Outcome | None,
    view: ClusterRead | None,
    *,
    generation: int,
    previous: list[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    def make(status: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(READY, status, reason, message, generation=generation, previous=previous, now=now)

    if outcome is not None and not outcome.ok:
        return make(False, outcome.reason, outcome.message)
    if view is None or view.health is ClusterHealth.PENDING:
        return make(False, REASON_AWAITING_REGISTRATION, "no heartbeat yet: the spoke has not registered")
    heartbeat = rfc3339(view.last_heartbeat_at) or "never"
    if view.health is ClusterHealth.OFFLINE:
        return make(False, REASON_OFFLINE, f"no heartbeat since {heartbeat}")
    if view.health is ClusterHealth.DEGRADED:
        failed = sorted(c.name for c in view.policies.values() if c.state == PolicyApplyState.FAILED)
        details = list(view.problems)
        if failed:
            details.append(f"failed policies: {', '.join(failed)}")
        if not details:
            details.append(f"heartbeat late (last at {heartbeat})")
        return make(False, REASON_DEGRADED, "; ".join(details))
    return make(True, REASON_HEARTBEAT, f"last heartbeat at {heartbeat}")


# --------------------------------------------------------------------------- policies


def rollout_status(progress: RolloutProgress) -> dict[str, Any]:
    """``.status.rollout`` of a gated policy: the phase and the clusters per phase."""
    return {
        "phase": progress.phase,
        "generation": progress.generation,
        "doneClusters": progress.count("done"),
        "updatingClusters": progress.count("updating"),
        "waitingClusters": progress.count("waiting"),
        "failedClusters": progress.count("failed"),
    }


def policy_status_body(
    outcome: Outcome | None,
    status: FederatedPolicyStatus | None,
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
    rollout: RolloutProgress | None = None,
) -> dict[str, Any]:
    """``.status`` of a federated policy: the hub policy's id and generation, one entry per
    cluster that has or had it, the rollout of a progressive or suspended policy, and ``Synced``
    (True when every placed cluster reports the current generation with the hash the hub rendered
    for it)."""
    old = _previous_conditions(previous)
    generation = outcome.generation if outcome else generation
    body: dict[str, Any] = {"observedGeneration": generation}
    placed = []
    if status is not None:
        placed = [c for c in status.clusters if c.placed]
        body.update(
            policyId=status.id,
            hubGeneration=status.generation,
            placedClusters=len(placed),
            syncedClusters=sum(1 for c in placed if c.in_sync),
            clusterStatuses=[
                _drop_none(
                    {
                        "clusterName": c.cluster,
                        "state": str(c.state),
                        "generation": c.generation,
                        "inSync": c.in_sync,
                        "message": _clip(c.message) if c.message else None,
                        "lastSyncTime": rfc3339(c.observed_at),
                    }
                )
                for c in sorted(status.clusters, key=lambda c: c.cluster)
            ],
            rollout=rollout_status(rollout) if rollout is not None else None,
        )

    def make(ok: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(SYNCED, ok, reason, message, generation=generation, previous=old, now=now)

    if outcome is not None and not outcome.ok:
        synced = make(False, outcome.reason, outcome.message)
    elif status is None:
        synced = make(False, REASON_SYNC_PENDING, "the hub holds no policy for this object yet")
    else:
        current = status.generation
        failed = [c for c in placed if c.state == PolicyApplyState.FAILED and c.generation == current]
        waiting = sorted(c.cluster for c in placed if not c.in_sync)
        if failed:
            failed.sort(key=lambda c: c.cluster)
            text = "; ".join(f"{c.cluster}: {c.message or 'failed'}" for c in failed)
            synced = make(False, REASON_SYNC_FAILED, f"generation {status.generation} failed on {text}")
        elif waiting:
            synced = make(
                False,
                REASON_SYNC_PENDING,
                f"generation {status.generation} not yet in sync on {', '.join(waiting)}",
            )
        elif not placed:
            synced = make(True, REASON_SYNC_SUCCESS, "no cluster is placed")
        else:
            synced = make(
                True, REASON_SYNC_SUCCESS, f"generation {status.generation} in sync on {len(placed)} clusters"
            )
    body["conditions"] = [synced]
    return _drop_none(body)


# --------------------------------------------------------------------------- patching


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning ``current`` into ``desired`` (None: already equal); keys that
    are gone are set to null, lists are replaced whole."""
    current = current or {}
    if dict(current) == dict(desired):
        return None
    patch: dict[str, Any] = dict(desired)
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch
