"""The response service's FastAPI application: the policy API, and (``consume_in_app``) the
findings consumer and outbox relay running beside it in the same process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_session_factory
from qcdr_common.service_app import create_service_app
from qcdr_common.streams.runner import in_background

from qcdr_response.actions.router import router as actions_router
from qcdr_response.actions.runtime import actions_context
from qcdr_response.dns.router import router as dns_router
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.router import router as lifecycle_router
from qcdr_response.outputs.config import load_outputs
from qcdr_response.outputs.router import router as outputs_router
from qcdr_response.settings import ResponseSettings, get_settings
from qcdr_response.worker import ResponseWorker


def create_app(settings: ResponseSettings | None = None, *, auth: ApiAuthSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(settings, title="qcdr response", auth=auth)
    app.include_router(lifecycle_router)
    app.include_router(actions_router)
    app.include_router(outputs_router)
    app.include_router(dns_router)
    common_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with common_lifespan(app):  # engine, Redis, readiness checks
            app.state.sessions = make_session_factory(app.state.engine)
            cluster = ClusterGateway.from_settings(settings)
            app.state.cluster = cluster
            app.state.actions = actions_context(settings) if settings.actions_enabled else None
            app.state.output_configs = load_outputs(settings.outputs_file)
            try:
                if not settings.consume_in_app:
                    yield
                    return
                worker = ResponseWorker(
                    settings,
                    app.state.engine,
                    app.state.redis,
                    cluster=cluster,
                    actions_ctx=app.state.actions,
                )
                app.state.wake_relay = worker.relay.notify
                app.state.output_configs = worker.outputs.configs
                app.state.output_sinks = worker.outputs.sinks
                app.state.wake_outputs = worker.outputs.notify
                async with in_background("response-worker", worker.run):
                    yield
            finally:
                if cluster is not None:
                    await cluster.close()

    app.router.lifespan_context = lifespan
    return app
