"""Commands: operators act on a spoke's response actions through the hub; the spoke long-polls for
them and posts back what its response API answered, which the waiting operator request passes on.

Waiting never holds a database connection: each check is a short session of its own (100 spokes
long-polling must not drain the pool).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import PROBLEM_MEDIA_TYPE, ApiError
from qcdr_common.contracts.federation.v1 import (
    ClusterHealth,
    CommandKind,
    CommandResult,
    PendingAction,
    SpokeCommand,
)
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.deps import Session, Settings
from qcdr_federation.hub.clusters import service as clusters
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.clusters.router import ClusterName, not_found
from qcdr_federation.hub.clusters.schemas import ClusterActions
from qcdr_federation.hub.commands import service
from qcdr_federation.hub.commands.bus import CommandBus
from qcdr_federation.hub.commands.models import CommandRow, CommandState
from qcdr_federation.hub.commands.schemas import CommandQueued, CommandRead, CommandRequest
from qcdr_federation.hub.health import derive_health
from qcdr_federation.hub.metrics import COMMANDS
from qcdr_federation.hub.spoke_auth import SpokeAuth

log = get_logger("qcdr.federation.commands")

router = APIRouter(tags=["commands"])
spoke_router = APIRouter(prefix="/federation/v1", tags=["spoke protocol"])

ActionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,200}$")]
CommandId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,200}$")]


class SpokeCommands(BaseModel):
    items: list[SpokeCommand]


def _read(row: CommandRow, cluster: str) -> CommandRead:
    return CommandRead(
        id=row.id,
        cluster=cluster,
        kind=row.kind,
        action_id=row.action_id,
        reason=row.reason,
        lease_s=row.lease_s,
        requested_by=row.requested_by,
        created_at=row.created_at,
        state=row.state,
        delivered_at=row.delivered_at,
        status_code=row.status_code,
        result=row.result,
        finished_at=row.finished_at,
    )


def _passthrough(row: CommandRow) -> Response:
    """The spoke's response API answer, as it was (status and JSON body)."""
    status = row.status_code or 502
    headers = {"X-Federation-Command": row.id}
    if status < 200:  # an informational status cannot end an exchange
        status = 502
    if status in (204, 304) or row.result is None:
        return Response(status_code=status, headers=headers)
    body: Any = row.result
    problem = status >= 400 and isinstance(body, dict) and {"status", "reason"} <= body.keys()
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE if problem else "application/json",
    )


async def _get_command(sessions: async_sessionmaker[AsyncSession], command_id: str) -> CommandRow | None:
    async with sessions() as session:
        return await service.get(session, command_id)


def _is_reachable(cluster: ClusterRow, settings: Settings, now: datetime) -> bool:
    health = derive_health(
        registered_at=cluster.registered_at,
        last_heartbeat_at=cluster.last_heartbeat_at,
        problems=False,
        policy_failed=False,
        settings=settings,
        now=now,
    )
    return health not in (ClusterHealth.PENDING, ClusterHealth.OFFLINE)


@router.post("/v1/clusters/{name}/actions/{action_id}/{verb}", responses={202: {"model": CommandQueued}})
async def command(
    name: ClusterName,
    action_id: ActionId,
    verb: CommandKind,
    request: Request,
    session: Session,
    settings: Settings,
    principal: WritePrincipal,
    body: CommandRequest | None = None,
) -> Response:
    """Approve, reject, undo or renew one of the spoke's response actions. Waits up to
    ``command_wait_s`` for the spoke and answers with its response API's status and body; 202 with
    the command (poll ``GET /v1/commands/{id}``) when it has not answered by then, or at once when
    the cluster is offline (the command waits for it)."""
    now = datetime.now(UTC)
    cluster = await clusters.get_cluster(session, name)
    if cluster is None:
        raise not_found(name)
    body = body or CommandRequest()
    if body.lease is not None and verb is not CommandKind.RENEW:
        raise ApiError(422, "lease is for renew only", reason="invalid_lease")
    row = await service.create(
        session,
        cluster_id=cluster.id,
        kind=verb,
        action_id=action_id,
        reason=body.note,
        lease_s=body.lease,
        requested_by=principal.name,
        now=now,
    )
    reachable = _is_reachable(cluster, settings, now)
    await session.commit()
    await session.close()  # no connection held while waiting
    COMMANDS.labels(kind=verb.value, outcome="queued").inc()
    log.info(
        "federation_command_queued",
        command=row.id,
        cluster=name,
        kind=verb.value,
        action_id=action_id,
        by=principal.name,
        reachable=reachable,
    )
    bus: CommandBus = request.app.state.command_bus
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (settings.command_wait_s if reachable else 0.0)
    with bus.waiter(f"done:{row.id}") as answered:
        await bus.announce(f"queued:{cluster.id}")
        while loop.time() < deadline:
            await bus.wait(answered, deadline)
            current = await _get_command(request.app.state.sessions, row.id)
            if current is not None and current.state == CommandState.DONE.value:
                return _passthrough(current)
    latest = await _get_command(request.app.state.sessions, row.id) or row
    detail = (
        "the cluster is offline: the command waits for it"
        if not reachable
        else f"no answer from the spoke within {settings.command_wait_s:g} s; poll the command"
    )
    queued = CommandQueued(command=_read(latest, name), detail=detail)
    return Response(
        content=queued.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/commands/{row.id}", "X-Federation-Command": row.id},
    )


@router.get("/v1/commands/{command_id}", response_model=CommandRead)
async def get_command(command_id: CommandId, session: Session, _: ReadPrincipal) -> CommandRead:
    row = await service.get(session, command_id)
    if row is None:
        raise ApiError(404, f"no command {command_id!r}", reason="command_not_found")
    cluster = await session.get(ClusterRow, row.cluster_id)
    return _read(row, cluster.name if cluster is not None else row.cluster_id)


@router.get("/v1/clusters/{name}/actions", response_model=ClusterActions)
async def cluster_actions(name: ClusterName, session: Session, _: ReadPrincipal) -> ClusterActions:
    """The response actions waiting for approval and the running leases on the spoke, as its last
    heartbeat reported them."""
    cluster = await clusters.get_cluster(session, name)
    if cluster is None:
        raise not_found(name)
    items: list[PendingAction] = []
    for raw in (cluster.heartbeat or {}).get("actions") or []:
        try:
            items.append(PendingAction.model_validate(raw))
        except ValidationError:  # stored from a validated heartbeat; skip rather than fail the list
            continue
    return ClusterActions(cluster_name=name, reported_at=cluster.last_heartbeat_at, items=items)


# --------------------------------------------------------------------------- spoke side


@spoke_router.get("/commands", response_model=SpokeCommands)
async def poll(
    caller: SpokeAuth,
    request: Request,
    settings: Settings,
    wait: Annotated[float, Query(ge=0, description="Seconds to hold the request while nothing is due.")] = 0,
) -> SpokeCommands:
    """The commands due for this spoke (marked delivered; one not answered within the redelivery
    time comes again). Returns as soon as one is due, or empty after ``wait`` seconds (at most
    ``long_poll_max_s``)."""
    bus: CommandBus = request.app.state.command_bus
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_max_s)
    with bus.waiter(f"queued:{caller.cluster_id}") as queued:
        while True:
            async with sessions() as session:
                rows = await service.claim(
                    session,
                    caller.cluster_id,
                    now=datetime.now(UTC),
                    redeliver_s=settings.command_redeliver_s,
                    ttl_s=settings.command_ttl_s,
                )
                await session.commit()
            if rows or loop.time() >= deadline:
                return SpokeCommands(items=[service.to_spoke(r) for r in rows])
            await bus.wait(queued, deadline)


@spoke_router.post("/commands/{command_id}/result", status_code=204)
async def result(
    command_id: CommandId, body: CommandResult, caller: SpokeAuth, request: Request, session: Session
) -> Response:
    """What the spoke's response API answered; the first answer stands (repeats are harmless)."""
    row = await service.record_result(session, caller.cluster_id, command_id, body, datetime.now(UTC))
    if row is None:
        raise ApiError(404, f"no command {command_id!r} for this cluster", reason="command_not_found")
    await session.commit()
    COMMANDS.labels(kind=row.kind, outcome="answered").inc()
    log.info(
        "federation_command_answered",
        command=command_id,
        cluster=caller.cluster_name,
        kind=row.kind,
        status_code=row.status_code,
    )
    bus: CommandBus = request.app.state.command_bus
    await bus.announce(f"done:{command_id}")
    return Response(status_code=204)
