"""Run a periodic job in one replica at a time: a PostgreSQL session advisory lock, tried (never
waited for) on a connection held for the job's duration and released after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


@asynccontextmanager
async def singleton(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Yields True when this process holds the lock ``name`` (False: another one runs the job)."""
    async with engine.connect() as connection:
        held = bool(
            await connection.scalar(text("SELECT pg_try_advisory_lock(hashtext(:name))"), {"name": name})
        )
        await connection.commit()
        try:
            yield held
        finally:
            if held:
                await connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
                await connection.commit()
