"""Clusters: in hub role the health matrix of the spokes (health, last heartbeat, versions), which
federated policies are applied where and the latest findings the spokes forwarded (``?cluster=``
narrows them to one spoke); in the other roles, what this cluster is."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from qcdr_common.api.pagination import PageRequest
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN, FederationRole

from qcdr_federation.console.web import PREFIX, ConsoleRefusedError, SessionDep, StateDep, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SPOKE_FINDINGS = 50
CLUSTER_NAME = re.compile(CLUSTER_NAME_PATTERN)


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
        from qcdr_federation.hub.forwarding.listing import forwarded_findings
        from qcdr_federation.hub.policies.service import live_policies

        spoke = request.query_params.get("cluster", "").strip()
        if spoke and not CLUSTER_NAME.fullmatch(spoke):
            raise ConsoleRefusedError(400, "not a cluster name")
        async with request.app.state.sessions() as db:
            views = await cluster_views(db, state.settings, datetime.now(UTC))
            policies = await live_policies(db)
            forwarded = await forwarded_findings(db, PageRequest(limit=SPOKE_FINDINGS), cluster=spoke or None)
        context["spoke"] = spoke
        context["spoke_findings"] = [{"cluster": item.cluster, **item.finding} for item in forwarded.items]
        context["clusters"] = views
        context["policies"] = sorted(policies, key=lambda p: p.name)
        context["health_counts"] = {
            health: sum(1 for v in views if v.health.value == health)
            for health in ("healthy", "degraded", "offline", "pending")
        }
    return render(request, "clusters.html", session, active="clusters", **context)
