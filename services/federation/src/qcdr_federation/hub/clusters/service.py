"""Spoke clusters on the hub: declaration, removal, bootstrap tokens and the clusters' views.

The REST API and the CRD controller both call these; they only flush, the caller commits (and
then wakes the placement long polls when labels changed, see ``hub/policies``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from qcdr_common.contracts.federation.v1 import ClusterHealth, PolicyApplyState
from qcdr_common.streams.envelope import uuid7
from sqlalchemy import case, func, literal, null, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow, CredentialRow
from qcdr_federation.hub.clusters.schemas import ClusterRead, heartbeat_extras
from qcdr_federation.hub.health import derive_health
from qcdr_federation.hub.policies.schemas import PolicyCell
from qcdr_federation.hub.policies.service import status_matrix
from qcdr_federation.hub.spoke_auth import new_secret_pair, sha256
from qcdr_federation.settings import FederationSettings


def new_cluster_id() -> str:
    return f"cl-{uuid7()}"


async def get_cluster(session: AsyncSession, name: str, *, for_update: bool = False) -> ClusterRow | None:
    """The live (not removed) cluster of that name."""
    stmt = select(ClusterRow).where(ClusterRow.name == name, ClusterRow.removed_at.is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).one_or_none()


async def declare_cluster(
    session: AsyncSession, name: str, labels: Mapping[str, str], *, source: str
) -> ClusterRow:
    """Create the cluster, or replace its labels. Declaring a removed cluster brings it back as a
    new, unregistered one (its old credentials stay revoked): it registers again."""
    table = ClusterRow.__table__
    revived = table.c.removed_at.is_not(None)
    stmt = (
        insert(ClusterRow)
        .values(
            id=new_cluster_id(),
            name=name,
            labels=dict(labels),
            reported_labels={},
            source=source,
            heartbeat={},
            health=ClusterHealth.PENDING.value,
        )
        .on_conflict_do_update(
            index_elements=[table.c.name],
            set_={
                "labels": dict(labels),
                "source": case((revived, source), else_=table.c.source),
                "registered_at": case((revived, null()), else_=table.c.registered_at),
                "last_heartbeat_at": case((revived, null()), else_=table.c.last_heartbeat_at),
                "heartbeat": case((revived, literal({}, JSONB)), else_=table.c.heartbeat),
                "health": case((revived, ClusterHealth.PENDING.value), else_=table.c.health),
                "health_changed_at": case((revived, null()), else_=table.c.health_changed_at),
                "rotate_requested_at": None,
                "removed_at": None,
                "updated_at": func.now(),
            },
        )
        .returning(ClusterRow)
        .execution_options(populate_existing=True)
    )
    row: ClusterRow = (await session.scalars(stmt)).one()
    return row


async def set_labels(session: AsyncSession, name: str, labels: Mapping[str, str]) -> ClusterRow | None:
    row = await get_cluster(session, name, for_update=True)
    if row is None:
        return None
    row.labels = dict(labels)
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return row


async def remove_cluster(session: AsyncSession, name: str) -> bool:
    """Mark the cluster removed: its credentials and unused bootstrap tokens stop working at once;
    the row stays (history). False when there is no such live cluster."""
    row = await get_cluster(session, name, for_update=True)
    if row is None:
        return False
    now = datetime.now(UTC)
    row.removed_at = now
    row.updated_at = now
    await session.execute(
        update(CredentialRow)
        .where(CredentialRow.cluster_id == row.id, CredentialRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(BootstrapTokenRow)
        .where(
            BootstrapTokenRow.cluster_name == name,
            BootstrapTokenRow.used_at.is_(None),
            BootstrapTokenRow.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    await session.flush()
    return True


async def _ensure_cluster(session: AsyncSession, name: str, *, source: str) -> None:
    """A bootstrap token for a cluster nobody declared makes its row (with no labels)."""
    await session.execute(
        insert(ClusterRow)
        .values(
            id=new_cluster_id(),
            name=name,
            labels={},
            reported_labels={},
            source=source,
            heartbeat={},
            health=ClusterHealth.PENDING.value,
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )


async def register_bootstrap_digest(
    session: AsyncSession,
    cluster_name: str,
    sha256: bytes,
    *,
    source: str,
    created_by: str,
    expires_at: datetime | None,
) -> None:
    """Accept a bootstrap token known only by its SHA-256 (a Secret a FederatedCluster names).
    Idempotent: a digest already known is left as it is (used, revoked or not)."""
    await _ensure_cluster(session, cluster_name, source=source)
    await session.execute(
        insert(BootstrapTokenRow)
        .values(
            id=f"bt-{uuid7()}",
            cluster_name=cluster_name,
            sha256=sha256,
            source=source,
            created_by=created_by,
            expires_at=expires_at,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    await session.flush()


class ClusterRemovedError(Exception):
    """The cluster was removed: declare it again before making tokens for it."""


async def create_bootstrap_token(
    session: AsyncSession,
    cluster_name: str,
    *,
    ttl_s: float,
    created_by: str,
    now: datetime,
    source: str = "api",
) -> tuple[BootstrapTokenRow, str]:
    """A new one-time token (``<id>.<secret>``) for ``cluster_name``; the secret is returned once."""
    removed = await session.scalar(
        select(ClusterRow.id).where(ClusterRow.name == cluster_name, ClusterRow.removed_at.is_not(None))
    )
    if removed is not None:
        raise ClusterRemovedError(cluster_name)
    await _ensure_cluster(session, cluster_name, source=source)
    ident, token = new_secret_pair()
    row = BootstrapTokenRow(
        id=ident,
        cluster_name=cluster_name,
        sha256=sha256(token),
        source=source,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        attempts=0,
    )
    session.add(row)
    await session.flush()
    return row, token


async def revoke_bootstrap_token(session: AsyncSession, cluster_name: str, token_id: str) -> bool:
    result = await session.execute(
        update(BootstrapTokenRow)
        .where(
            BootstrapTokenRow.id == token_id,
            BootstrapTokenRow.cluster_name == cluster_name,
            BootstrapTokenRow.revoked_at.is_(None),
        )
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(getattr(result, "rowcount", 0))


# --------------------------------------------------------------------------- views


def policy_failed(cells: Mapping[str, PolicyCell]) -> bool:
    return any(cell.state == PolicyApplyState.FAILED for cell in cells.values())


def cluster_read(
    row: ClusterRow, cells: Mapping[str, PolicyCell], settings: FederationSettings, now: datetime
) -> ClusterRead:
    counts, problems = heartbeat_extras(row.heartbeat or {})
    health = derive_health(
        registered_at=row.registered_at,
        last_heartbeat_at=row.last_heartbeat_at,
        problems=bool(problems),
        policy_failed=policy_failed(cells),
        settings=settings,
        now=now,
    )
    return ClusterRead(
        name=row.name,
        id=row.id,
        labels=dict(row.labels),
        reported_labels=dict(row.reported_labels or {}),
        source=row.source,
        health=health,
        health_changed_at=row.health_changed_at,
        registered_at=row.registered_at,
        last_heartbeat_at=row.last_heartbeat_at,
        version=row.version,
        kubernetes_version=row.kubernetes_version,
        node_count=row.node_count,
        pod_count=row.pod_count,
        counts=counts,
        problems=problems,
        rotate_requested=row.rotate_requested_at is not None,
        policies=dict(cells),
    )


async def live_clusters(session: AsyncSession) -> list[ClusterRow]:
    return list(
        (
            await session.scalars(
                select(ClusterRow).where(ClusterRow.removed_at.is_(None)).order_by(ClusterRow.name)
            )
        ).all()
    )


async def cluster_views(
    session: AsyncSession, settings: FederationSettings, now: datetime
) -> list[ClusterRead]:
    rows = await live_clusters(session)
    matrix = await status_matrix(session)
    return [cluster_read(row, matrix.get(row.name, {}), settings, now) for row in rows]


async def cluster_view(
    session: AsyncSession, settings: FederationSettings, name: str, now: datetime
) -> ClusterRead | None:
    row = await get_cluster(session, name)
    if row is None:
        return None
    matrix = await status_matrix(session)
    return cluster_read(row, matrix.get(row.name, {}), settings, now)
