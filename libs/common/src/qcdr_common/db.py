"""Async SQLAlchemy engine and session factories, and the constraint naming convention."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def json_dumps(value: Any) -> str:
    """JSON for JSON/JSONB columns: orjson, several times faster than the standard library's
    encoder SQLAlchemy uses by default (every finding, event and outbox payload goes through it);
    non-string keys are written as strings, as ``json.dumps`` writes them."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=True,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def driver_connection(session: AsyncSession) -> Any:
    """The session's asyncpg connection, inside the session's transaction, for what SQLAlchemy has
    no API for (COPY). See :func:`transaction_driver`."""
    return await transaction_driver(await session.connection())


async def transaction_driver(connection: AsyncConnection) -> Any:
    """The asyncpg connection under ``connection``, with ``connection``'s transaction begun.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement *it* executes;
    statements sent straight to asyncpg before that would each commit on their own (two COPYs
    meant to go together would not). So when nothing went through SQLAlchemy yet, a no-op does.
    """
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise RuntimeError("the connection has no asyncpg driver connection")
    if not driver.is_in_transaction():
        await connection.execute(text("SELECT 1"))  # SQLAlchemy sends its BEGIN first
    return driver
