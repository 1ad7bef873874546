"""Spoke-facing routes of the cluster lifecycle (``/federation/v1``: register, heartbeat,
credential rotation). Public for the API-token middleware: registration is authenticated by the
bootstrap token, everything else by the spoke's credential (:data:`SpokeAuth`)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from qcdr_common.api.errors import ApiError
from qcdr_common.contracts.federation.v1 import (
    ClusterHeartbeat,
    HeartbeatAck,
    PolicyApplyState,
    RegisterRequest,
    RegisterResponse,
)
from qcdr_common.logging import get_logger

from qcdr_federation.deps import Session, Settings
from qcdr_federation.hub.clusters import registration
from qcdr_federation.hub.health import derive_health
from qcdr_federation.hub.metrics import HEARTBEATS
from qcdr_federation.hub.policies.service import placed_set, record_statuses
from qcdr_federation.hub.spoke_auth import SpokeAuth, auth_failure, client_address, forget_verified

log = get_logger("qcdr.federation.spokes")

router = APIRouter(prefix="/federation/v1", tags=["spoke protocol"])


def _credential_response(answer: RegisterResponse) -> JSONResponse:
    """The answer with the credential in clear: the one time it is shown (a SecretStr would
    serialize as asterisks)."""
    body = answer.model_dump(mode="json")
    body["credential"] = answer.credential.get_secret_value()
    return JSONResponse(body, status_code=201, headers={"Cache-Control": "no-store"})


@router.post("/register", status_code=201, response_model=RegisterResponse)
async def register(
    body: RegisterRequest, request: Request, session: Session, settings: Settings
) -> JSONResponse:
    """Exchange a one-time bootstrap token for this spoke's credential (earlier ones are revoked)."""
    client = client_address(request)
    try:
        answer = await registration.register(
            session, body, settings=settings, now=datetime.now(UTC), client=client
        )
    except ApiError:
        await session.commit()  # the attempt counted on a token that was found
        raise
    await session.commit()
    forget_verified(request.app.state)  # the cluster's earlier credentials were revoked
    log.info(
        "federation_spoke_registered",
        cluster=answer.cluster_name,
        cluster_id=answer.cluster_id,
        credential_id=answer.credential_id,
        client=client,
        version=body.version,
    )
    return _credential_response(answer)


@router.post("/credentials/rotate", status_code=201, response_model=RegisterResponse)
async def rotate(caller: SpokeAuth, request: Request, session: Session, settings: Settings) -> JSONResponse:
    """A new credential; the one this request used keeps working for the overlap."""
    answer = await registration.rotate(session, caller, settings=settings, now=datetime.now(UTC))
    await session.commit()
    log.info(
        "federation_credential_rotated",
        cluster=caller.cluster_name,
        old_credential_id=caller.credential_id,
        credential_id=answer.credential_id,
        client=client_address(request),
    )
    return _credential_response(answer)


@router.post("/heartbeat", response_model=HeartbeatAck)
async def heartbeat(
    body: ClusterHeartbeat, caller: SpokeAuth, request: Request, session: Session, settings: Settings
) -> HeartbeatAck:
    now = datetime.now(UTC)
    cluster = await registration.record_heartbeat(session, caller, body, now)
    if cluster is None:  # removed between authentication and now
        raise auth_failure(
            "cluster_removed",
            "the cluster was removed from the hub",
            client=client_address(request),
            credential_id=caller.credential_id,
            cluster_name=caller.cluster_name,
        )
    await record_statuses(session, caller.cluster_id, body.policies, full=True)
    rotate_requested = cluster.rotate_requested_at is not None
    registered_at = cluster.registered_at
    await session.commit()
    HEARTBEATS.inc()
    policies = await placed_set(session, caller.cluster_name, caller.labels)
    pending = await registration.open_command_count(session, caller.cluster_id)
    health = derive_health(
        registered_at=registered_at,
        last_heartbeat_at=now,
        problems=bool(body.problems),
        policy_failed=any(p.state == PolicyApplyState.FAILED for p in body.policies),
        settings=settings,
        now=now,
    )
    return HeartbeatAck(
        health=health,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        policies_etag=policies.etag,
        commands_pending=pending,
        rotate_credential=rotate_requested,
    )
