"""Actions: pending approvals (approve / reject with a reason) and active containment leases
(renew, undo) of this cluster's response service; in hub role also each spoke's pending actions
as its last heartbeat reported them, with approve / reject queued as hub commands for the spoke.

Every write carries a note naming the signed-in principal ("via console by X")."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import CommandKind, FederationRole, PendingAction

from qcdr_federation.console.session import ConsoleSession
from qcdr_federation.console.web import (
    PREFIX,
    ConsoleRefusedError,
    ConsoleState,
    FormDep,
    SessionDep,
    StateDep,
    render,
    require_write,
    via,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

LIST_LIMIT = 1000
MAX_REASON = 1500
_LEASE = re.compile(r"[0-9]{1,9}[smhd]?")
_ACTION_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_CLUSTER = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
LOCAL_VERBS = ("approve", "reject", "renew", "undo")
SPOKE_VERBS = (CommandKind.APPROVE, CommandKind.REJECT)
DONE = {
    "approve": "approved",
    "reject": "rejected",
    "renew": "renewed",
    "undo": "undo requested for",
    "queued": "command queued for",
}


async def _spoke_actions(state: ConsoleState, request: Request) -> list[dict[str, Any]]:
    """Per spoke: its pending actions from its last heartbeat (hub role only)."""
    from qcdr_federation.hub.clusters.service import cluster_views, get_cluster

    out: list[dict[str, Any]] = []
    async with request.app.state.sessions() as session:
        views = await cluster_views(session, state.settings, datetime.now(UTC))
        for view in views:
            row = await get_cluster(session, view.name)
            items: list[PendingAction] = []
            for raw in ((row.heartbeat if row is not None else None) or {}).get("actions") or []:
                try:
                    items.append(PendingAction.model_validate(raw))
                except ValidationError:
                    continue
            out.append({"cluster": view.name, "health": view.health.value, "items": items})
    return out


RECENT = 25


@router.get("/actions")
async def actions(request: Request, session: SessionDep, state: StateDep) -> Response:
    pending, running, recent = await asyncio.gather(
        state.backends.get("response", "/v1/actions", {"state": "pending", "limit": str(LIST_LIMIT)}),
        state.backends.get("response", "/v1/actions", {"state": "succeeded", "limit": str(LIST_LIMIT)}),
        # every state, newest first: what became of what was approved (dry runs, failures, undos)
        state.backends.get("response", "/v1/actions", {"limit": str(RECENT)}),
    )
    errors = [r for r in (pending, running, recent) if not r.ok]
    pending_items = pending.data.get("items", []) if pending.ok and isinstance(pending.data, dict) else []
    leases = [
        a
        for a in (running.data.get("items", []) if running.ok and isinstance(running.data, dict) else [])
        if a.get("containment") and a.get("lease_expires_at")
    ]
    spokes = await _spoke_actions(state, request) if state.role is FederationRole.HUB else []
    done = request.query_params.get("done", "")
    done_id = request.query_params.get("id", "")
    message = f"Action {done_id} {DONE[done]}." if done in DONE and _ACTION_ID.fullmatch(done_id) else None
    return render(
        request,
        "actions.html",
        session,
        active="actions",
        errors=errors,
        pending=pending_items,
        leases=leases,
        recent=recent.data.get("items", []) if recent.ok and isinstance(recent.data, dict) else [],
        spokes=spokes,
        hub=state.role is FederationRole.HUB,
        message=message,
    )


def _reason(form: dict[str, str]) -> str:
    reason = form.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise ConsoleRefusedError(400, f"the reason is longer than {MAX_REASON} characters")
    return reason


@router.post("/actions/{action_id}/{verb}")
async def local_action(
    action_id: int, verb: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    require_write(session)
    if verb not in LOCAL_VERBS:
        raise ConsoleRefusedError(404, "no such action verb")
    body: dict[str, Any]
    if verb == "renew":
        lease = form.get("lease", "").strip()
        if lease and not _LEASE.fullmatch(lease):
            raise ConsoleRefusedError(400, "the lease must be seconds or like 90s, 15m, 2h, 1d")
        body = {"lease": lease} if lease else {}
    else:
        if verb == "reject" and not _reason(form):
            raise ConsoleRefusedError(400, "a rejection needs a reason")
        body = {"note": via(session, _reason(form))}
    result = await state.backends.post("response", f"/v1/actions/{action_id}/{verb}", body)
    if not result.ok:
        raise ConsoleRefusedError(
            502 if result.status is None or result.status >= 500 else 409, result.message
        )
    return RedirectResponse(f"{PREFIX}/actions?done={verb}&id={action_id}", status_code=303)


async def _queue_command(
    request: Request,
    state: ConsoleState,
    session: ConsoleSession,
    cluster: str,
    action_id: str,
    kind: CommandKind,
    note: str,
) -> str:
    from qcdr_federation.hub.clusters.service import get_cluster
    from qcdr_federation.hub.commands import service as commands

    async with request.app.state.sessions() as db:
        row = await get_cluster(db, cluster)
        if row is None:
            raise ConsoleRefusedError(404, f"no cluster {cluster}")
        command = await commands.create(
            db,
            cluster_id=row.id,
            kind=kind,
            action_id=action_id,
            reason=note,
            lease_s=None,
            requested_by=session.principal,
            now=datetime.now(UTC),
        )
        await db.commit()
        cluster_id = row.id
    # wake the spoke's long poll now rather than at its next pull
    bus = getattr(request.app.state, "command_bus", None)
    if bus is not None:
        await bus.announce(f"queued:{cluster_id}")
    return command.id


@router.post("/clusters/{cluster}/actions/{action_id}/{verb}")
async def spoke_action(
    cluster: str,
    action_id: str,
    verb: str,
    request: Request,
    session: SessionDep,
    state: StateDep,
    form: FormDep,
) -> Response:
    require_write(session)
    if state.role is not FederationRole.HUB:
        raise ConsoleRefusedError(404, "this cluster is not a federation hub")
    if not _CLUSTER.fullmatch(cluster) or not _ACTION_ID.fullmatch(action_id):
        raise ConsoleRefusedError(404, "no such cluster or action")
    kinds = {k.value: k for k in SPOKE_VERBS}
    if verb not in kinds:
        raise ConsoleRefusedError(404, "no such action verb")
    reason = _reason(form)
    if verb == "reject" and not reason:
        raise ConsoleRefusedError(400, "a rejection needs a reason")
    await _queue_command(request, state, session, cluster, action_id, kinds[verb], via(session, reason))
    return RedirectResponse(f"{PREFIX}/actions?done=queued&id={action_id}", status_code=303)
