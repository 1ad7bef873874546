"""Clusters: in hub role the health matrix of the spokes (health, last heartbeat, versions) and
which federated policies are applied where; in the other roles, what this cluster is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from qcdr_common.contracts.federation.v1 import FederationRole

from qcdr_federation.console.web import PREFIX, SessionDep, StateDep, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/clusters")
async def clusters(request: Request, session: SessionDep, state: StateDep) -> Response:
    context: dict[str, Any] = {
        "hub": state.role is FederationRole.HUB,
        "hub_url": state.settings.hub_url,
        "clusters": [],
        "policies": [],
    }
    if state.role is FederationRole.HUB:
        # the hub's own service layer: the console runs in the hub process
        from qcdr_federation.hub.clusters.service import cluster_views
        from qcdr_federation.hub.policies.service import live_policies

        async with request.app.state.sessions() as db:
            views = await cluster_views(db, state.settings, datetime.now(UTC))
            policies = await live_policies(db)
        context["clusters"] = views
        context["policies"] = sorted(policies, key=lambda p: p.name)
        context["health_counts"] = {
            health: sum(1 for v in views if v.health.value == health)
            for health in ("healthy", "degraded", "offline", "pending")
        }
    return render(request, "clusters.html", session, active="clusters", **context)
