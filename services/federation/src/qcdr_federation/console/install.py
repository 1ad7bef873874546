"""``install_console(app, settings)``: the ``/ui`` pages on the federation app, in every role.

``/ui`` is public for the bearer-token middleware (:data:`CONSOLE_PUBLIC_PATHS`): the console
authenticates by its own session cookie. The session store and the backend clients are made in the
app's lifespan (Redis exists by then) and kept on ``app.state.console``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from qcdr_common.logging import get_logger

from qcdr_federation.console.backends import Backends
from qcdr_federation.console.session import SessionStore
from qcdr_federation.console.views import (
    actions,
    admission,
    auth,
    chains,
    clusters,
    findings,
    overview,
    policies,
)
from qcdr_federation.console.web import (
    PREFIX,
    ConsoleRefusedError,
    ConsoleState,
    SecurityHeaders,
    refused_handler,
)
from qcdr_federation.settings import FederationSettings

CONSOLE_PUBLIC_PATHS = (PREFIX, f"{PREFIX}/*")

log = get_logger("qcdr.federation.console")


def install_console(app: FastAPI, settings: FederationSettings) -> None:
    for module in (auth, overview, clusters, chains, findings, policies, actions, admission):
        app.include_router(module.router)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="console-static",
    )
    app.add_exception_handler(ConsoleRefusedError, refused_handler)
    app.add_middleware(SecurityHeaders)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app):
            backends = Backends(settings)
            if settings.console_token() is None:
                # pages still render, each backend box saying "HTTP 401"
                log.warning("console_no_service_token", hint="set QCDR_CONSOLE_SERVICE_TOKEN(_FILE)")
            app.state.console = ConsoleState(
                settings=settings,
                sessions=SessionStore(
                    app.state.redis,
                    settings.redis_prefix,
                    idle_s=settings.console_session_idle_s,
                    max_s=settings.console_session_max_s,
                ),
                backends=backends,
            )
            try:
                yield
            finally:
                await app.state.console.backends.aclose()

    app.router.lifespan_context = lifespan
