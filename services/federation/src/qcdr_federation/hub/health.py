"""Cluster health: derived from the last contact and what the spoke reported, and the sweep that
records transitions.

Reads (``/v1/clusters``) derive health from timestamps when they answer, so they are right between
sweeps. The sweep (every ``health_sweep_s``) stores each change in ``health`` /
``health_changed_at`` and logs ``federation_cluster_health_changed`` once per transition; it runs
under a transaction-scoped Postgres advisory lock, so with several hub replicas one writes and the
others skip. Every replica sets the ``qualys_federation_clusters{state}`` gauges from what it read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from qcdr_common.contracts.federation.v1 import ClusterHealth
from qcdr_common.logging import get_logger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.metrics import CLUSTERS, HEALTH_TRANSITIONS
from qcdr_federation.settings import FederationSettings

log = get_logger("qcdr.federation.health")

# pg_try_advisory_xact_lock key of the sweep: "qcdr_FED" in ASCII, fixed forever
SWEEP_LOCK_KEY = 0x7163_6472_5F46_4544


def derive_health(
    *,
    registered_at: datetime | None,
    last_heartbeat_at: datetime | None,
    problems: bool,
    policy_failed: bool,
    settings: FederationSettings,
    now: datetime,
) -> ClusterHealth:
    """Never registered: pending. Silent past ``offline_after_s``: offline. Silent past
    ``degraded_after_s``, or reporting problems, or a policy failed: degraded. Else healthy.
    Registration counts as contact (a spoke heartbeats right after it)."""
    if registered_at is None:
        return ClusterHealth.PENDING
    contacts = [t for t in (registered_at, last_heartbeat_at) if t is not None]
    silent = (now - max(contacts)).total_seconds()
    if silent > settings.offline_after_s:
        return ClusterHealth.OFFLINE
    if silent > settings.degraded_after_s or problems or policy_failed:
        return ClusterHealth.DEGRADED
    return ClusterHealth.HEALTHY


@dataclass(frozen=True)
class Transition:
    cluster: str
    before: str
    after: ClusterHealth


def set_gauges(counts: dict[ClusterHealth, int]) -> None:
    for state in ClusterHealth:
        CLUSTERS.labels(state=state.value).set(counts.get(state, 0))


async def sweep_health(
    sessions: async_sessionmaker[AsyncSession], settings: FederationSettings, now: datetime
) -> list[Transition]:
    """One sweep: derive every live cluster's health, set the gauges and, when this replica holds
    the lock, store and log the transitions. Returns the transitions stored (empty without the lock)."""
    # imported here: the clusters service imports this module for derive_health
    from qcdr_federation.hub.clusters.schemas import heartbeat_extras
    from qcdr_federation.hub.clusters.service import live_clusters
    from qcdr_federation.hub.policies.service import clusters_with_failed_policies

    transitions: list[Transition] = []
    async with sessions() as session, session.begin():
        locked = await session.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK_KEY)))
        rows = await live_clusters(session)
        # one query for "which clusters report a failed policy", not the whole status matrix:
        # the sweep runs every few seconds and the matrix grows with clusters x policies
        failing = await clusters_with_failed_policies(session)
        counts: dict[ClusterHealth, int] = {}
        for row in rows:
            _, problems = heartbeat_extras(row.heartbeat or {})
            health = derive_health(
                registered_at=row.registered_at,
                last_heartbeat_at=row.last_heartbeat_at,
                problems=bool(problems),
                policy_failed=row.name in failing,
                settings=settings,
                now=now,
            )
            counts[health] = counts.get(health, 0) + 1
            if locked and health.value != row.health:
                transitions.append(Transition(row.name, row.health, health))
                row.health = health.value
                row.health_changed_at = now
        set_gauges(counts)
    for t in transitions:
        HEALTH_TRANSITIONS.labels(state=t.after.value).inc()
        log.info("federation_cluster_health_changed", cluster=t.cluster, before=t.before, after=t.after.value)
    return transitions
