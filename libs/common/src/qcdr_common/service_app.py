"""The FastAPI skeleton every service shares: lifespan owning engine, Redis and httpx clients,
health routes and Prometheus metrics. Services add their own routers on top."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from redis.asyncio import Redis

from qcdr_common.db import make_engine, ping
from qcdr_common.health import health_router
from qcdr_common.logging import configure_logging
from qcdr_common.settings import CommonSettings


def create_service_app(settings: CommonSettings, *, title: str, version: str = "0.1.0") -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format.value)
        engine = make_engine(settings.database_url.get_secret_value())
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))

        async def redis_ping() -> None:
            await redis.ping()

        async def db_ping() -> None:
            await ping(engine)

        app.state.settings = settings
        app.state.engine = engine
        app.state.redis = redis
        app.state.http = http
        app.state.readiness_checks = {"postgres": db_ping, "redis": redis_ping}
        try:
            yield
        finally:
            await http.aclose()
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(title=title, version=version, lifespan=lifespan)
    app.include_router(health_router())
    Instrumentator(excluded_handlers=["/healthz", "/readyz", "/metrics"]).instrument(app).expose(
        app, include_in_schema=False
    )
    return app
