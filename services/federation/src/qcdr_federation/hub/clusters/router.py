"""Operator API of spoke clusters (``/v1/clusters``; API tokens, write scope for changes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN
from qcdr_common.logging import get_logger

from qcdr_federation.deps import Session, Settings
from qcdr_federation.hub.clusters import registration, service
from qcdr_federation.hub.clusters.schemas import (
    BootstrapTokenCreate,
    BootstrapTokenCreated,
    ClusterDeclare,
    ClusterPatch,
    ClusterRead,
    CredentialsRevoked,
    RotationRequested,
)
from qcdr_federation.hub.policies.notify import notify_placements_changed
from qcdr_federation.hub.spoke_auth import forget_verified

log = get_logger("qcdr.federation.clusters")

router = APIRouter(prefix="/v1/clusters", tags=["clusters"])

ClusterName = Annotated[str, Path(pattern=CLUSTER_NAME_PATTERN, max_length=63)]


def not_found(name: str) -> ApiError:
    return ApiError(404, f"no cluster named {name!r}", reason="cluster_not_found")


async def _view(session: Session, settings: Settings, name: str) -> ClusterRead:
    view = await service.cluster_view(session, settings, name, datetime.now(UTC))
    if view is None:
        raise not_found(name)
    return view


@router.get("", response_model=list[ClusterRead])
async def list_clusters(session: Session, settings: Settings, _: ReadPrincipal) -> list[ClusterRead]:
    """Every live cluster: health (derived now), last heartbeat, versions, counts, problems and
    the state of each federated policy placed on it."""
    return await service.cluster_views(session, settings, datetime.now(UTC))


@router.get("/{name}", response_model=ClusterRead)
async def get_cluster(
    name: ClusterName, session: Session, settings: Settings, _: ReadPrincipal
) -> ClusterRead:
    return await _view(session, settings, name)


@router.post("", response_model=ClusterRead, status_code=201)
async def declare(
    body: ClusterDeclare, request: Request, session: Session, settings: Settings, principal: WritePrincipal
) -> ClusterRead:
    """Declare a cluster with the labels placement selects on (409 if it exists: PATCH it)."""
    if await service.get_cluster(session, body.name) is not None:
        raise ApiError(409, f"cluster {body.name!r} exists; PATCH its labels", reason="cluster_exists")
    await service.declare_cluster(session, body.name, body.labels, source="api")
    await session.commit()
    log.info("federation_cluster_declared", cluster=body.name, labels=body.labels, by=principal.name)
    await notify_placements_changed(request.app.state)
    return await _view(session, settings, body.name)


@router.patch("/{name}", response_model=ClusterRead)
async def patch(
    name: ClusterName,
    body: ClusterPatch,
    request: Request,
    session: Session,
    settings: Settings,
    principal: WritePrincipal,
) -> ClusterRead:
    if await service.set_labels(session, name, body.labels) is None:
        raise not_found(name)
    await session.commit()
    log.info("federation_cluster_labels_changed", cluster=name, labels=body.labels, by=principal.name)
    await notify_placements_changed(request.app.state)
    return await _view(session, settings, name)


@router.delete("/{name}", status_code=204)
async def remove(
    name: ClusterName, request: Request, session: Session, principal: WritePrincipal
) -> Response:
    """Remove the cluster: its credentials stop working at once, its policies are unplaced."""
    if not await service.remove_cluster(session, name):
        raise not_found(name)
    await session.commit()
    forget_verified(request.app.state)
    log.info("federation_cluster_removed", cluster=name, by=principal.name)
    await notify_placements_changed(request.app.state)
    return Response(status_code=204)


@router.post("/{name}/bootstrap-tokens", response_model=BootstrapTokenCreated, status_code=201)
async def create_bootstrap_token(
    name: ClusterName,
    session: Session,
    settings: Settings,
    principal: WritePrincipal,
    body: BootstrapTokenCreate | None = None,
) -> BootstrapTokenCreated:
    """A one-time token the spoke registers with (shown once; the hub keeps its hash). A cluster
    nobody declared yet is created without labels."""
    ttl_s = body.ttl_s if body is not None and body.ttl_s is not None else settings.bootstrap_token_ttl_s
    try:
        row, token = await service.create_bootstrap_token(
            session, name, ttl_s=ttl_s, created_by=principal.name, now=datetime.now(UTC)
        )
    except service.ClusterRemovedError:
        raise ApiError(
            409, f"cluster {name!r} was removed; declare it again first", reason="cluster_removed"
        ) from None
    await session.commit()
    log.info(
        "federation_bootstrap_token_created",
        cluster=name,
        token_id=row.id,
        expires_at=row.expires_at,
        by=principal.name,
    )
    return BootstrapTokenCreated(id=row.id, cluster_name=name, token=token, expires_at=row.expires_at)


@router.delete("/{name}/bootstrap-tokens/{token_id}", status_code=204)
async def revoke_bootstrap_token(
    name: ClusterName,
    token_id: Annotated[str, Path(max_length=200)],
    session: Session,
    principal: WritePrincipal,
) -> Response:
    if not await service.revoke_bootstrap_token(session, name, token_id):
        raise ApiError(
            404, f"no unrevoked bootstrap token {token_id!r} for {name!r}", reason="token_not_found"
        )
    await session.commit()
    log.info("federation_bootstrap_token_revoked", cluster=name, token_id=token_id, by=principal.name)
    return Response(status_code=204)


@router.post("/{name}/credentials/revoke", response_model=CredentialsRevoked)
async def revoke_credentials(
    name: ClusterName, request: Request, session: Session, principal: WritePrincipal
) -> CredentialsRevoked:
    """Every credential of the cluster stops working; the spoke needs a new bootstrap token."""
    count = await registration.revoke_credentials(session, name, datetime.now(UTC))
    if count is None:
        raise not_found(name)
    await session.commit()
    forget_verified(request.app.state)
    log.info("federation_credentials_revoked", cluster=name, revoked=count, by=principal.name)
    return CredentialsRevoked(cluster_name=name, revoked=count)


@router.post("/{name}/credentials/rotate", response_model=RotationRequested, status_code=202)
async def rotate_credentials(
    name: ClusterName, session: Session, principal: WritePrincipal
) -> RotationRequested:
    """Ask the spoke to rotate its credential (its next heartbeat answer says so)."""
    at = await registration.request_rotation(session, name, datetime.now(UTC))
    if at is None:
        raise not_found(name)
    await session.commit()
    log.info("federation_rotation_requested", cluster=name, by=principal.name)
    return RotationRequested(cluster_name=name, rotate_requested_at=at)
