"""Alembic environment of the response service (async, asyncpg).

Run through :func:`qcdr_response.db.upgrade` (``qcdr-response db upgrade``), or by a developer with
``alembic -c services/response/src/qcdr_response/db/alembic.ini revision --autogenerate -m "..."``
(the URL then comes from ``DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from qcdr_response.db import VERSION_TABLE, asyncpg_url
from qcdr_response.db.models import metadata
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

config = context.config
if config.config_file_name is not None:  # the developer's `alembic -c .../alembic.ini`
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if isinstance(url, str):
        return url
    from qcdr_response.settings import get_settings

    return asyncpg_url(get_settings().database_url.get_secret_value())


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # one database, several owners: compare only the tables response owns
    if type_ == "table":
        return name in metadata.tables
    return True


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    # two upgrade jobs at once (compose one-shot and a Job, two replicas): the second waits,
    # then finds the work done; the lock ends with the transaction
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": VERSION_TABLE})
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=NullPool)
    try:
        # engine.begin(): one transaction (PostgreSQL DDL is transactional), committed here
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
