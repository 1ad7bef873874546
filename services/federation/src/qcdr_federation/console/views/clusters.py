"""Clusters: in hub role the health matrix of the spokes (health, last heartbeat, versions), which
federated policies are applied where and the latest findings the spokes forwarded (``?cluster=``
narrows them to one spoke); in the other roles, what this cluster is."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from qcdr_common.api.pagination import PageRequest
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN, FederationRole

from qcdr_federation.console.web import (
    PREFIX,
    ConsoleRefusedError,
    FormDep,
    SessionDep,
    StateDep,
    render,
    require_write,
    via,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SPOKE_FINDINGS = 50
CLUSTER_NAME = re.compile(CLUSTER_NAME_PATTERN)
POLICY_ID = re.compile(r"^fp-[0-9a-f-]{1,60}$")
ROLLOUT_VERBS = ("suspend", "resume")


@router.get("/clusters")
async def clusters(request: Request, session: SessionDep, state: StateDep) -> Response:
    context: dict[str, Any] = {
        "hub": state.role is FederationRole.HUB,
        "hub_url": state.settings.hub_url,
        "clusters": [],
        "policies": [],
        "rollouts": {},
    }
    if state.role is FederationRole.HUB:
        # the hub's own service layer: the console runs in the hub process
        from qcdr_federation.hub.clusters.service import cluster_views
        from qcdr_federation.hub.forwarding.listing import forwarded_findings
        from qcdr_federation.hub.policies.service import live_policies

        spoke = request.query_params.get("cluster", "").strip()
        if spoke and not CLUSTER_NAME.fullmatch(spoke):
            raise ConsoleRefusedError(400, "not a cluster name")
        async with request.app.state.sessions() as db:
            views = await cluster_views(db, state.settings, datetime.now(UTC))
            policies = await live_policies(db)
            rollouts = await _rollouts(db)
            forwarded = await forwarded_findings(db, PageRequest(limit=SPOKE_FINDINGS), cluster=spoke or None)
        context["rollouts"] = rollouts
        context["spoke"] = spoke
        context["spoke_findings"] = [{"cluster": item.cluster, **item.finding} for item in forwarded.items]
        context["clusters"] = views
        context["policies"] = sorted(policies, key=lambda p: p.name)
        context["health_counts"] = {
            health: sum(1 for v in views if v.health.value == health)
            for health in ("healthy", "degraded", "offline", "pending")
        }
    return render(request, "clusters.html", session, active="clusters", **context)


async def _rollouts(db: Any) -> dict[str, dict[str, Any]]:
    """Policy id -> its rollout (phase, clusters done of placed), for the gated policies only."""
    from qcdr_federation.hub.policies import repository as repo
    from qcdr_federation.hub.policies.rollout import progress_of

    found: dict[str, dict[str, Any]] = {}
    now = datetime.now(UTC)
    gated = await repo.gated_heads(db)
    clusters = await repo.live_clusters(db) if gated else []
    for policy_id, _ in gated:
        row = await repo.get(db, policy_id)
        progress = await progress_of(db, row, now, clusters) if row is not None else None
        if progress is not None:
            found[policy_id] = {
                "phase": progress.phase,
                "done": progress.count("done"),
                "placed": len(progress.clusters),
            }
    return found


@router.post("/federated-policies/{policy_id}/{verb}")
async def suspend_or_resume(
    policy_id: str, verb: str, request: Request, session: SessionDep, state: StateDep, form: FormDep
) -> Response:
    """Suspend or resume a federated policy (hub role, write scope), then back to the clusters."""
    require_write(session)
    if state.role is not FederationRole.HUB:
        raise ConsoleRefusedError(404, "federated policies live on the hub")
    if verb not in ROLLOUT_VERBS or not POLICY_ID.fullmatch(policy_id):
        raise ConsoleRefusedError(404, "no such federated policy action")
    from qcdr_federation.hub.policies import rollout
    from qcdr_federation.hub.policies.notify import notify_placements_changed

    async with request.app.state.sessions() as db:
        change = rollout.suspend if verb == "suspend" else rollout.resume
        row = await change(db, policy_id, via(session))
        if row is None:
            raise ConsoleRefusedError(404, f"no federated policy {policy_id}")
        await db.commit()
    await notify_placements_changed(request.app)
    return RedirectResponse(f"{PREFIX}/clusters", status_code=303)
