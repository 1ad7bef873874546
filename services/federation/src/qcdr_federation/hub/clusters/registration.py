"""A spoke's life on the hub: registration with a bootstrap token, credential rotation and
revocation, heartbeats.

Registration: the token must exist (looked up by its SHA-256), be unused, unexpired, unrevoked and
made for the cluster name the spoke gives; it is then used up, the cluster's earlier credentials
are revoked and a new ``<id>.<secret>`` is issued (the hub keeps its hash). Labels a spoke reports
are recorded beside the declared ones, never used for placement.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import (
    ClusterHeartbeat,
    RegisterRequest,
    RegisterResponse,
)
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow, CredentialRow
from qcdr_federation.hub.clusters.service import get_cluster
from qcdr_federation.hub.commands.models import CommandRow, CommandState
from qcdr_federation.hub.spoke_auth import SpokeCaller, auth_failure, new_secret_pair, sha256
from qcdr_federation.settings import FederationSettings

REFUSAL_DETAIL = (
    "the bootstrap token is unknown, used, expired, revoked or made for another cluster; "
    "ask the hub operator for a new one"
)


async def _issue_credential(session: AsyncSession, cluster_id: str, now: datetime) -> tuple[str, str]:
    ident, credential = new_secret_pair()
    session.add(CredentialRow(id=ident, cluster_id=cluster_id, sha256=sha256(credential), created_at=now))
    await session.flush()
    return ident, credential


def _answer(
    cluster: ClusterRow, ident: str, credential: str, settings: FederationSettings
) -> RegisterResponse:
    return RegisterResponse(
        cluster_id=cluster.id,
        cluster_name=cluster.name,
        credential_id=ident,
        credential=SecretStr(credential),
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )


async def register(
    session: AsyncSession,
    request: RegisterRequest,
    *,
    settings: FederationSettings,
    now: datetime,
    client: str | None,
) -> RegisterResponse:
    """Exchange a bootstrap token for a credential, or raise the (logged, counted) 401.

    A refusal that found the token counts an attempt on it; the caller commits that too."""
    digest = sha256(request.bootstrap_token.get_secret_value())
    # The cluster row first, then its token: the order the controller takes them in (it updates
    # the cluster, then inserts or revokes its tokens), so the two never wait on each other in a
    # cycle. Taken the other way round, a spoke registering while the controller's resync stored
    # the Secret's token deadlocked (a 500 the spoke had to retry; seen once in CI).
    cluster = await get_cluster(session, request.cluster_name, for_update=True)
    token = (
        await session.scalars(
            select(BootstrapTokenRow).where(BootstrapTokenRow.sha256 == digest).with_for_update()
        )
    ).one_or_none()

    def refuse(why: str, reason: str = "invalid_bootstrap_token") -> Exception:
        detail = REFUSAL_DETAIL if reason == "invalid_bootstrap_token" else "the cluster was removed"
        return auth_failure(reason, detail, client=client, cluster_name=request.cluster_name, why=why)

    if token is None or not hmac.compare_digest(token.sha256, digest):
        raise refuse("unknown")
    token.attempts += 1
    if token.revoked_at is not None:
        raise refuse("revoked")
    if token.cluster_name != request.cluster_name:
        raise refuse("wrong_cluster")
    if token.used_at is not None and not _answer_was_lost(token, cluster, settings, now):
        raise refuse("used")
    if token.used_at is None and token.expires_at is not None and token.expires_at <= now:
        raise refuse("expired")
    if cluster is None:
        raise refuse("cluster_removed", "cluster_removed")
    token.used_at = token.used_at or now
    await session.execute(
        update(CredentialRow)
        .where(CredentialRow.cluster_id == cluster.id, CredentialRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    cluster.registered_at = now
    cluster.reported_labels = dict(request.labels)
    cluster.version = request.version or None
    cluster.kubernetes_version = request.kubernetes_version
    cluster.rotate_requested_at = None
    cluster.updated_at = now
    ident, credential = await _issue_credential(session, cluster.id, now)
    return _answer(cluster, ident, credential, settings)


def _answer_was_lost(
    token: BootstrapTokenRow, cluster: ClusterRow | None, settings: FederationSettings, now: datetime
) -> bool:
    """A used token is accepted again for a short while when the spoke evidently never got the
    credential it was exchanged for (a reply lost on the way): no heartbeat since the exchange.
    A spoke heartbeats right after registering, so the window closes as soon as it succeeds; a new
    credential revokes the one the lost answer carried."""
    assert token.used_at is not None
    if cluster is None or (now - token.used_at).total_seconds() > settings.register_retry_s:
        return False
    return cluster.last_heartbeat_at is None or cluster.last_heartbeat_at < token.used_at


async def rotate(
    session: AsyncSession, caller: SpokeCaller, *, settings: FederationSettings, now: datetime
) -> RegisterResponse:
    """A new credential for the calling spoke; the one it called with keeps working for
    ``credential_overlap_s`` (requests already in flight, a reply lost on the way)."""
    cluster = await get_cluster(session, caller.cluster_name, for_update=True)
    if cluster is None:  # removed between authentication and now
        raise auth_failure(
            "cluster_removed",
            "the cluster was removed from the hub",
            client=None,
            credential_id=caller.credential_id,
            cluster_name=caller.cluster_name,
        )
    overlap_end = now + timedelta(seconds=settings.credential_overlap_s)
    await session.execute(
        update(CredentialRow)
        .where(
            CredentialRow.id == caller.credential_id,
            (CredentialRow.expires_at.is_(None)) | (CredentialRow.expires_at > overlap_end),
        )
        .values(expires_at=overlap_end)
    )
    cluster.rotate_requested_at = None
    cluster.updated_at = now
    ident, credential = await _issue_credential(session, cluster.id, now)
    return _answer(cluster, ident, credential, settings)


async def revoke_credentials(session: AsyncSession, name: str, now: datetime) -> int | None:
    """Revoke every credential of the cluster (it registers again with a new bootstrap token);
    None when there is no such cluster."""
    cluster = await get_cluster(session, name)
    if cluster is None:
        return None
    result = await session.execute(
        update(CredentialRow)
        .where(CredentialRow.cluster_id == cluster.id, CredentialRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0))


async def request_rotation(session: AsyncSession, name: str, now: datetime) -> datetime | None:
    """Ask the spoke for a rotation at its next heartbeat; None when there is no such cluster."""
    cluster = await get_cluster(session, name, for_update=True)
    if cluster is None:
        return None
    if cluster.rotate_requested_at is None:
        cluster.rotate_requested_at = now
    await session.flush()
    return cluster.rotate_requested_at


async def record_heartbeat(
    session: AsyncSession, caller: SpokeCaller, heartbeat: ClusterHeartbeat, now: datetime
) -> ClusterRow | None:
    """Store the heartbeat on the cluster row (the hub's clock is the contact time: a spoke's
    clock may be off). The per-policy list is stored by ``record_statuses``, not here."""
    cluster = await get_cluster(session, caller.cluster_name, for_update=True)
    if cluster is None:
        return None
    cluster.last_heartbeat_at = now
    cluster.heartbeat = heartbeat.model_dump(mode="json", exclude={"policies"})
    cluster.version = heartbeat.version or cluster.version
    cluster.kubernetes_version = heartbeat.kubernetes_version or cluster.kubernetes_version
    cluster.node_count = heartbeat.node_count
    cluster.pod_count = heartbeat.pod_count
    cluster.updated_at = now
    await session.flush()
    return cluster


async def open_command_count(session: AsyncSession, cluster_id: str) -> int:
    """Commands the spoke has yet to answer (pending, or delivered and not answered)."""
    count = await session.scalar(
        select(func.count())
        .select_from(CommandRow)
        .where(
            CommandRow.cluster_id == cluster_id,
            CommandRow.state.in_((CommandState.PENDING.value, CommandState.DELIVERED.value)),
        )
    )
    return int(count or 0)
