"""Wiring the federated policies into the hub app: ``install_policies(app, settings)`` adds the
operator router (``/v1/federated-policies``) and the spoke router (``/federation/v1/policies``,
``/federation/v1/status``; public for the bearer middleware, see ``SPOKE_PATHS``) and, in the
lifespan, the in-memory placements (``app.state.placements``) with their refresh loop and Redis
listener, a readiness check ``placements``, and the loop that moves progressive rollouts on
(``app.state.rollouts``). Call it from ``install_hub``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from qcdr_common.db import make_session_factory
from qcdr_common.streams.runner import in_background

from qcdr_federation.hub.policies.notify import DEFAULT_RECHECK_S, Placements
from qcdr_federation.hub.policies.rollout import RolloutLoop
from qcdr_federation.hub.policies.router import router as operator_router
from qcdr_federation.hub.policies.spoke_router import router as spoke_router
from qcdr_federation.settings import FederationSettings


def install_policies(
    app: FastAPI, settings: FederationSettings, *, recheck_s: float = DEFAULT_RECHECK_S
) -> None:
    app.include_router(operator_router)
    app.include_router(spoke_router)
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with outer(app):
            if not hasattr(app.state, "sessions"):
                app.state.sessions = make_session_factory(app.state.engine)
            placements = Placements(
                app.state.sessions, app.state.redis, prefix=settings.redis_prefix, recheck_s=recheck_s
            )
            app.state.placements = placements
            app.state.readiness_checks["placements"] = placements.ready
            rollouts = RolloutLoop(app.state.sessions, placements.changed, settings.rollout_interval_s)
            app.state.rollouts = rollouts
            async with (
                in_background("federation-placements", placements.run),
                in_background("federation-rollouts", rollouts.run),
            ):
                yield

    app.router.lifespan_context = lifespan
