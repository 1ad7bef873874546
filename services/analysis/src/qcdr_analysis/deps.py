"""FastAPI dependencies of the analysis service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_analysis.settings import AnalysisSettings


def settings_dep(request: Request) -> AnalysisSettings:
    settings: AnalysisSettings = request.app.state.settings
    return settings


async def session_dep(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for the request; the routes only read, so nothing is committed."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(session_dep)]
