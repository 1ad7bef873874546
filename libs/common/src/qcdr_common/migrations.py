"""Alembic for a service that shares the database with the others.

Each service keeps its revision in a table of its own (``alembic_version_<service>``), compares
only the tables it owns, and takes a PostgreSQL advisory lock so that two upgrade jobs at once
(a compose one-shot and a Job, two replicas) wait for each other. Migrations run as a command
(``qcdr-<svc> db upgrade``), never at app start-up.

Alembic is imported only when a migration runs: it costs most of a second, and ``consume``
restarting after a crash should be back at work quickly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from logging.config import fileConfig
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, MetaData, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config


def asyncpg_url(database_url: str) -> str:
    """The URL with the asyncpg driver (``postgresql://`` is accepted as well)."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def _no_running_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{what}() runs its own event loop: call it from sync code (a CLI, a job, a thread)")


class ServiceMigrations:
    """The migrations of one service: ``upgrade``, ``downgrade``, ``current_revision``."""

    def __init__(self, service: str, migrations_dir: Path) -> None:
        self.service = service
        self.migrations_dir = migrations_dir
        self.version_table = f"alembic_version_{service}"

    def alembic_config(self, database_url: str | None = None) -> Config:
        """A programmatic Alembic config (no ini file needed; ``db/alembic.ini`` is for developers).

        The URL travels in ``config.attributes``, not in an ini option, where ``%`` in a password
        would be taken for interpolation.
        """
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(self.migrations_dir))
        config.set_main_option("path_separator", "os")
        if database_url is not None:
            config.attributes["database_url"] = asyncpg_url(database_url)
        return config

    def upgrade(self, database_url: str, revision: str = "head") -> str | None:
        """Migrate up to ``revision``; returns the revision the database is at afterwards (idempotent)."""
        _no_running_loop("upgrade")
        from alembic import command

        command.upgrade(self.alembic_config(database_url), revision)
        return self.current_revision(database_url)

    def downgrade(self, database_url: str, revision: str) -> str | None:
        """Migrate down to ``revision`` (``base`` drops every table of the service); for tests."""
        _no_running_loop("downgrade")
        from alembic import command

        command.downgrade(self.alembic_config(database_url), revision)
        return self.current_revision(database_url)

    def current_revision(self, database_url: str) -> str | None:
        """The revision recorded in the service's version table (None before the first upgrade)."""
        _no_running_loop("current_revision")
        from alembic.runtime.migration import MigrationContext

        def read(connection: Connection) -> str | None:
            context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
            return context.get_current_revision()

        async def run() -> str | None:
            engine = create_async_engine(asyncpg_url(database_url), poolclass=NullPool)
            try:
                async with engine.connect() as connection:
                    return await connection.run_sync(read)
            finally:
                await engine.dispose()

        return asyncio.run(run())


def run_alembic_env(metadata: MetaData, version_table: str, settings_url: Callable[[], str]) -> None:
    """The body of a service's ``migrations/env.py`` (async, asyncpg).

    ``settings_url`` gives the URL when a developer runs ``alembic -c …/alembic.ini`` directly.
    """
    from alembic import context

    config = context.config
    if config.config_file_name is not None:  # the developer's `alembic -c .../alembic.ini`
        fileConfig(config.config_file_name, disable_existing_loggers=False)

    def database_url() -> str:
        url = config.attributes.get("database_url")
        return url if isinstance(url, str) else asyncpg_url(settings_url())

    def include_name(name: str | None, type_: str, parent_names: object) -> bool:
        # one database, several owners: compare only the tables this service owns
        return name in metadata.tables if type_ == "table" else True

    def configure(**kwargs: Any) -> None:
        context.configure(
            target_metadata=metadata,
            version_table=version_table,
            include_name=include_name,
            compare_type=True,
            **kwargs,
        )

    def run(connection: Connection) -> None:
        # the lock ends with the transaction; a second upgrade waits, then finds the work done
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": version_table})
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(database_url(), poolclass=NullPool)
        try:
            # engine.begin(): one transaction (PostgreSQL DDL is transactional), committed here
            async with engine.begin() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(online())


def create_outbox_table(service: str) -> None:
    """In a migration: the ``<service>_outbox`` table exactly as
    :func:`qcdr_common.streams.outbox.outbox_table` declares it (every service has one, so the
    DDL lives once, beside the model it must match)."""
    import sqlalchemy as sa
    from alembic import op

    name = f"{service}_outbox"
    op.create_table(
        name,
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("envelope_id", sa.Text(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False, comment="Stream name without the key prefix."),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False, comment="The envelope JSON, as published."),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        sa.UniqueConstraint("envelope_id", name=f"uq_{name}_envelope_id"),
    )
    op.create_index(f"ix_{name}_unpublished", name, ["id"], postgresql_where=sa.text("published_at IS NULL"))


def drop_outbox_table(service: str) -> None:
    from alembic import op

    name = f"{service}_outbox"
    op.drop_index(f"ix_{name}_unpublished", table_name=name)
    op.drop_table(name)
