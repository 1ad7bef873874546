"""The federation service's FastAPI application, one app for the three roles.

Every role: health, metrics, ``GET /v1/federation`` and the outbox relay (a hub publishes forwarded
events onto ``ingest:events``, a spoke publishes placed policies and shared baselines onto its own
streams). Role hub adds the spoke-facing ``/federation/v1/*`` routes (authenticated by each spoke's
own credential, so public for the API-token middleware) and the operator routes; role spoke adds
the agent that talks to the hub. Installers wrap ``app.router.lifespan_context``, so their lifespan
pieces run inside this one: the engine, Redis, ``app.state.sessions`` and ``app.state.relay`` exist
by then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_common.db import make_session_factory
from qcdr_common.service_app import create_service_app
from qcdr_common.streams.outbox import OutboxRelay
from qcdr_common.streams.runner import in_background

from qcdr_federation.console.install import CONSOLE_PUBLIC_PATHS, install_console
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.hub.info import router as info_router
from qcdr_federation.settings import FederationSettings, get_settings

# everything a spoke calls: authenticated by the spoke credential (SpokeAuth), not by API tokens
SPOKE_API_PREFIX = "/federation/v1"
SPOKE_API_PUBLIC = f"{SPOKE_API_PREFIX}/*"


def create_app(settings: FederationSettings | None = None, *, auth: ApiAuthSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    hub = settings.role is FederationRole.HUB
    app = create_service_app(
        settings,
        title="qcdr federation",
        auth=auth,
        # the console (/ui) signs in with its own session cookie
        public_paths=(SPOKE_API_PUBLIC, *CONSOLE_PUBLIC_PATHS) if hub else CONSOLE_PUBLIC_PATHS,
    )
    app.include_router(info_router)
    app.state.relay = None
    app.state.spoke_info = None
    common_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with common_lifespan(app), AsyncExitStack() as stack:  # engine, Redis, readiness checks
            app.state.sessions = make_session_factory(app.state.engine)
            relay = OutboxRelay.from_settings(app.state.engine, app.state.redis, OUTBOX, settings)
            app.state.relay = relay
            if settings.consume_in_app:
                await stack.enter_async_context(in_background("federation-outbox-relay", relay.run))
            yield

    app.router.lifespan_context = lifespan
    install_console(app, settings)
    if hub:
        from qcdr_federation.hub.install import install_hub

        install_hub(app, settings)
    elif settings.role is FederationRole.SPOKE:
        # written by the spoke side; imported only in that role
        from qcdr_federation.spoke.install import install_spoke

        install_spoke(app, settings)
    return app
