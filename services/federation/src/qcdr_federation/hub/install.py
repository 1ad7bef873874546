"""The hub role: its routers and its lifespan pieces.

Routes: the spoke protocol under ``/federation/v1`` (public for the API-token middleware, each
route authenticates the spoke itself) and the operator API (``/v1/clusters``, ``/v1/commands``,
``/v1/baselines``, and the federated policies of ``hub/policies``).

Lifespan (inside the app's: engine, Redis, sessions and the outbox relay exist): the command bus
(Redis pub/sub → in-process wake-ups) always, since long polls need it; with ``consume_in_app``
the housekeeping loop (health sweep, command expiry) too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from qcdr_common.logging import get_logger
from qcdr_common.retention import AgeRule, OutboxRule, RetentionLoop, Rule
from qcdr_common.streams.runner import in_background
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.db.base import OUTBOX
from qcdr_federation.hub.baselines.router import router as baselines_router
from qcdr_federation.hub.baselines.router import spoke_router as baselines_spoke_router
from qcdr_federation.hub.clusters.router import router as clusters_router
from qcdr_federation.hub.clusters.spoke_router import router as clusters_spoke_router
from qcdr_federation.hub.commands import service as commands
from qcdr_federation.hub.commands.bus import CommandBus
from qcdr_federation.hub.commands.router import router as commands_router
from qcdr_federation.hub.commands.router import spoke_router as commands_spoke_router
from qcdr_federation.hub.forwarding import service as forwarding
from qcdr_federation.hub.forwarding.listing import router as forwarded_findings_router
from qcdr_federation.hub.forwarding.router import router as forwarding_router
from qcdr_federation.hub.health import sweep_health
from qcdr_federation.hub.metrics import COMMANDS
from qcdr_federation.settings import FederationSettings

log = get_logger("qcdr.federation.hub")


async def expire_commands(
    sessions: async_sessionmaker[AsyncSession], settings: FederationSettings, now: datetime
) -> int:
    async with sessions() as session:
        expired = await commands.expire(session, now=now, ttl_s=settings.command_ttl_s)
        await session.commit()
    for command_id, kind in expired:
        COMMANDS.labels(kind=kind, outcome="expired").inc()
        log.info("federation_command_expired", command=command_id, kind=kind)
    return len(expired)


async def prune_received(
    sessions: async_sessionmaker[AsyncSession], settings: FederationSettings, now: datetime
) -> int:
    async with sessions() as session:
        pruned = await forwarding.prune_received(
            session, before=now - timedelta(seconds=settings.received_retention_s)
        )
        await session.commit()
    return pruned


async def housekeeping(
    sessions: async_sessionmaker[AsyncSession], settings: FederationSettings, stop: asyncio.Event
) -> None:
    """Every ``health_sweep_s``: the health sweep, command expiry, and forgetting old forwarded
    item ids; failures are logged and the loop goes on (Postgres may be away for a while)."""
    while not stop.is_set():
        now = datetime.now(UTC)
        try:
            await sweep_health(sessions, settings, now)
            await expire_commands(sessions, settings, now)
            await prune_received(sessions, settings, now)
        except Exception as exc:
            log.warning("federation_housekeeping_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.health_sweep_s)


def hub_retention_rules(settings: FederationSettings) -> list[Rule]:
    """Forwarded findings by event time, published outbox rows (forwarded ids: housekeeping)."""
    return [
        AgeRule("federation_findings", "event_time", settings.findings_retention_s),
        OutboxRule(OUTBOX, settings.outbox_retention_s),
    ]


def install_hub(app: FastAPI, settings: FederationSettings) -> None:
    for router in (
        clusters_spoke_router,
        forwarding_router,
        baselines_spoke_router,
        commands_spoke_router,
        clusters_router,
        commands_router,
        baselines_router,
        forwarded_findings_router,
    ):
        app.include_router(router)
    app.state.command_bus = None
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with outer(app), AsyncExitStack() as stack:
            bus = CommandBus(app.state.redis, settings.redis_prefix)
            app.state.command_bus = bus
            await stack.enter_async_context(in_background("federation-command-bus", bus.run))
            if settings.consume_in_app:
                await stack.enter_async_context(
                    in_background(
                        "federation-hub-housekeeping",
                        lambda stop: housekeeping(app.state.sessions, settings, stop),
                    )
                )
                retention = RetentionLoop(
                    app.state.engine,
                    hub_retention_rules(settings),
                    service="federation",
                    interval_s=settings.retention_interval_s,
                )
                await stack.enter_async_context(in_background("federation-hub-retention", retention.run))
            yield

    app.router.lifespan_context = lifespan

    from qcdr_federation.hub.policies.lifespan import install_policies

    install_policies(app, settings)
    if settings.controller_enabled:
        from qcdr_federation.hub.controller.lifespan import install_controller

        install_controller(app, settings)
