"""The FastAPI skeleton every service shares: lifespan owning engine, Redis and httpx clients,
health routes, Prometheus metrics, bearer-token auth, problem-details errors and the OpenAPI
document. Services add their own routers on top.

Every route a service adds needs a bearer token (read scope for GET/HEAD/OPTIONS, write otherwise;
see :mod:`qcdr_common.api.auth`), ``/openapi.json`` included. Public: ``/healthz``, ``/readyz``
and ``/metrics`` (probes and Prometheus scrapers carry no token), plus any ``public_paths`` a
service names for callers that authenticate otherwise (the admission webhook, spokes, the console).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from redis.asyncio import Redis

from qcdr_common.api.auth import ApiAuthSettings, BearerAuthMiddleware, TokenStore
from qcdr_common.api.errors import install_error_handlers
from qcdr_common.api.openapi import install_openapi
from qcdr_common.db import make_engine, ping
from qcdr_common.health import health_router
from qcdr_common.logging import configure_logging, get_logger
from qcdr_common.settings import CommonSettings

PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics")


def create_service_app(
    settings: CommonSettings,
    *,
    title: str,
    version: str = "0.1.0",
    auth: ApiAuthSettings | None = None,
    public_paths: Iterable[str] = (),
    read_paths: Iterable[str] = (),
) -> FastAPI:
    """The service's app. ``auth`` defaults to the environment (``QCDR_API_TOKENS_FILE``,
    ``QCDR_API_TOKEN``, ``QCDR_API_TOKEN_READ``); a broken tokens file fails here, at start-up."""
    tokens = TokenStore.from_settings(auth if auth is not None else ApiAuthSettings())
    public = frozenset((*PUBLIC_PATHS, *public_paths))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format.value)
        log = get_logger("qcdr.api")
        if len(tokens) == 0:
            log.warning("api_no_tokens", hint="set QCDR_API_TOKENS_FILE or QCDR_API_TOKEN; API answers 401")
        else:
            log.info("api_tokens_loaded", names=tokens.names)
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

    # FastAPI's own /openapi.json and /docs routes would bypass auth: install_openapi serves the spec.
    app = FastAPI(
        title=title, version=version, lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.api_tokens = tokens
    install_error_handlers(app)
    app.include_router(health_router())
    # Added before the instrumentator, so the metrics middleware is outside it and counts 401s too.
    app.add_middleware(BearerAuthMiddleware, store=tokens, public_paths=public, read_paths=tuple(read_paths))
    Instrumentator(excluded_handlers=["/healthz", "/readyz", "/metrics"]).instrument(app).expose(
        app, include_in_schema=False
    )
    install_openapi(app, public)
    return app
