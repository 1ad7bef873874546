"""Run a job in one replica at a time: a PostgreSQL session advisory lock, tried (never waited for)
on a connection held for the job's duration and released after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class LockLostError(RuntimeError):
    """The connection holding the lock is gone: PostgreSQL released the lock with it."""


class Singleton:
    """Truthy while this process holds the lock."""

    def __init__(self, connection: AsyncConnection, held: bool) -> None:
        self._connection = connection
        self.held = held

    def __bool__(self) -> bool:
        return self.held

    async def verify(self, timeout_s: float = 5.0) -> None:
        """Raise :class:`LockLostError` unless the lock's connection still answers.

        A session lock lives as long as its connection. A long job (a stream followed for days)
        must check it: if only that idle connection dropped (a proxy's idle timeout, a restarted
        PostgreSQL), another replica takes the lock while this one would carry on."""
        try:
            await asyncio.wait_for(self._connection.execute(text("SELECT 1")), timeout_s)
            await self._connection.commit()
        except Exception as exc:
            self.held = False
            raise LockLostError(f"the advisory lock's connection is gone: {type(exc).__name__}") from exc


@asynccontextmanager
async def singleton(engine: AsyncEngine, name: str) -> AsyncIterator[Singleton]:
    """Yields a :class:`Singleton`, truthy when this process holds the lock ``name`` (falsy:
    another one runs the job)."""
    async with engine.connect() as connection:
        held = bool(
            await connection.scalar(text("SELECT pg_try_advisory_lock(hashtext(:name))"), {"name": name})
        )
        await connection.commit()
        lock = Singleton(connection, held)
        try:
            yield lock
        finally:
            if lock.held:
                await connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
                await connection.commit()
