"""The response service's tables and their migrations.

Migrations are Alembic scripts in ``db/migrations/versions/``, run by ``qcdr-response db upgrade``
(a compose one-shot, a Kubernetes Job), never at app start-up. All services share one database,
so each keeps its revision in a table of its own (``alembic_version_response``) and its autogenerate
looks at its own tables only. Nothing here imports the models: ``env.py`` does, when it runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

VERSION_TABLE = "alembic_version_response"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def asyncpg_url(database_url: str) -> str:
    """The URL with the asyncpg driver (``postgresql://`` is accepted as well)."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def alembic_config(database_url: str | None = None) -> Config:
    """A programmatic Alembic config (no ini file needed; ``db/alembic.ini`` is for developers).

    The URL travels in ``config.attributes``, not in an ini option, where ``%`` in a password
    would be taken for interpolation.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        config.attributes["database_url"] = asyncpg_url(database_url)
    return config


def _no_running_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{what}() runs its own event loop: call it from sync code (a CLI, a job, a thread)")


def upgrade(database_url: str, revision: str = "head") -> str | None:
    """Migrate the schema up to ``revision``; returns the revision the database is at afterwards.

    Idempotent (at ``head`` already: nothing happens). Concurrent runs wait for each other on a
    PostgreSQL advisory lock.
    """
    _no_running_loop("upgrade")
    command.upgrade(alembic_config(database_url), revision)
    return current_revision(database_url)


def downgrade(database_url: str, revision: str) -> str | None:
    """Migrate down to ``revision`` (``base`` drops every response table); for development and tests."""
    _no_running_loop("downgrade")
    command.downgrade(alembic_config(database_url), revision)
    return current_revision(database_url)


def current_revision(database_url: str) -> str | None:
    """The revision recorded in ``alembic_version_response`` (None before the first upgrade)."""
    _no_running_loop("current_revision")

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    async def run() -> str | None:
        engine = create_async_engine(asyncpg_url(database_url), poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())
