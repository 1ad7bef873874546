"""The asyncpg connection under a SQLAlchemy session, for what SQLAlchemy has no API for (COPY)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def driver_connection(session: AsyncSession) -> Any:
    """The session's asyncpg connection, inside the session's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement *it* executes;
    statements sent straight to asyncpg before that would each commit on their own. So the
    caller must have executed something through the session first (checked here).
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not driver.is_in_transaction():
        raise RuntimeError("execute a statement through the session before using its asyncpg connection")
    return driver
