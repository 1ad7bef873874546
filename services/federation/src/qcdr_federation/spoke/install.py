"""Wiring the spoke role into the federation app: ``install_spoke(app, settings)`` adds
``GET /v1/federation/spoke`` and, when ``settings.consume_in_app``, runs the agent inside the app's
lifespan (with the app's engine, Redis and outbox relay). Call it from ``create_app`` after the
common lifespan is in place (``app.state.engine``, ``redis``, ``sessions`` and ``relay`` exist
inside it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from qcdr_common.streams.runner import in_background

from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke.agent import run_agent
from qcdr_federation.spoke.router import router, spoke_info
from qcdr_federation.spoke.runtime import AgentState


def install_spoke(app: FastAPI, settings: FederationSettings) -> None:
    app.include_router(router)
    state = AgentState.from_settings(settings)
    app.state.spoke_state = state
    app.state.spoke_info = partial(spoke_info, state)
    if not settings.consume_in_app:
        return
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with outer(app):
            # the app's relay when it runs one (it is started by the common lifespan), else the agent's own
            relay = getattr(app.state, "relay", None)

            async def agent(stop: asyncio.Event) -> None:
                await run_agent(settings, app.state.engine, app.state.redis, stop, relay=relay, state=state)

            async with in_background("federation-spoke-agent", agent):
                yield

    app.router.lifespan_context = lifespan
