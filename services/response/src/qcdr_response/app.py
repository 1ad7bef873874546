"""The response service's FastAPI application: the policy API, and (``consume_in_app``) the
findings consumer and outbox relay running beside it in the same process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_session_factory
from qcdr_common.logging import get_logger
from qcdr_common.service_app import create_service_app

from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.router import router as lifecycle_router
from qcdr_response.settings import ResponseSettings, get_settings
from qcdr_response.worker import ResponseWorker

log = get_logger(__name__)
# SIGTERM: the worker finishes and acks its batch; Kubernetes' default grace period is 30 s
WORKER_STOP_TIMEOUT_S = 25.0


def _report_early_exit(stop: asyncio.Event) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        if not stop.is_set() and not task.cancelled():
            log.error("the response worker stopped while the app runs", error=repr(task.exception()))

    return done


def create_app(settings: ResponseSettings | None = None, *, auth: ApiAuthSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(settings, title="qcdr response", auth=auth)
    app.include_router(lifecycle_router)
    common_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with common_lifespan(app):  # engine, Redis, readiness checks
            app.state.sessions = make_session_factory(app.state.engine)
            cluster = ClusterGateway.from_settings(settings)
            app.state.cluster = cluster
            stop = asyncio.Event()
            task: asyncio.Task[None] | None = None
            if settings.consume_in_app:
                worker = ResponseWorker(settings, app.state.engine, app.state.redis, cluster=cluster)
                task = asyncio.create_task(worker.run(stop), name="response-worker")
                # The consumer and relay loops survive Redis/Postgres outages themselves; a worker
                # that ends before shutdown is a bug worth an error line.
                task.add_done_callback(_report_early_exit(stop))
            try:
                yield
            finally:
                stop.set()
                if task is not None:
                    try:
                        await asyncio.wait_for(task, WORKER_STOP_TIMEOUT_S)
                    except Exception:
                        log.exception("the response worker did not stop cleanly")
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
                if cluster is not None:
                    await cluster.close()

    app.router.lifespan_context = lifespan
    return app
