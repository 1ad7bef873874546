"""FastAPI dependencies of the response service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.settings import ResponseSettings


def settings_dep(request: Request) -> ResponseSettings:
    settings: ResponseSettings = request.app.state.settings
    return settings


async def session_dep(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; routes that write commit it themselves before answering, so a
    failed commit is never reported as a success."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


def cluster_dep(request: Request) -> ClusterGateway | None:
    cluster: ClusterGateway | None = getattr(request.app.state, "cluster", None)
    return cluster


Settings = Annotated[ResponseSettings, Depends(settings_dep)]
Session = Annotated[AsyncSession, Depends(session_dep)]
Cluster = Annotated[ClusterGateway | None, Depends(cluster_dep)]
