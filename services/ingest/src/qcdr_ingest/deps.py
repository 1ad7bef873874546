"""FastAPI dependencies of the ingest service (everything lives on ``app.state``, set up by the
lifespan in :mod:`qcdr_ingest.app`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from qcdr_common.registry import Registry
from qcdr_common.streams import OutboxRelay
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_ingest.events.ratelimit import TokenBuckets
from qcdr_ingest.events.registry import Adapter
from qcdr_ingest.settings import IngestSettings


def settings_dep(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


async def session_dep(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; the route commits (the unit of work ends at the edge)."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    async with factory() as session:
        yield session


def relay_dep(request: Request) -> OutboxRelay | None:
    relay: OutboxRelay | None = getattr(request.app.state, "relay", None)
    return relay


def rate_limiter_dep(request: Request) -> TokenBuckets:
    limiter: TokenBuckets = request.app.state.rate_limiter
    return limiter


def adapters_dep(request: Request) -> Registry[Adapter]:
    adapters: Registry[Adapter] = request.app.state.adapters
    return adapters


SettingsDep = Annotated[IngestSettings, Depends(settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(session_dep)]
RelayDep = Annotated[OutboxRelay | None, Depends(relay_dep)]
RateLimiterDep = Annotated[TokenBuckets, Depends(rate_limiter_dep)]
AdaptersDep = Annotated[Registry[Adapter], Depends(adapters_dep)]
