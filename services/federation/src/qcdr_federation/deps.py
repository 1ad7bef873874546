"""FastAPI dependencies of the federation service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.settings import FederationSettings


def settings_dep(request: Request) -> FederationSettings:
    settings: FederationSettings = request.app.state.settings
    return settings


async def session_dep(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request (``app.state.sessions``, made in the lifespan); routes that write
    commit it themselves before answering, so a failed commit is never reported as a success."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Settings = Annotated[FederationSettings, Depends(settings_dep)]
Session = Annotated[AsyncSession, Depends(session_dep)]
