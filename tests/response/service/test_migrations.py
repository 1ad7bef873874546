"""The response migrations: ``qcdr-response db upgrade`` is idempotent, and the schema matches the models."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from qcdr_response.cli import cli
from qcdr_response.db import VERSION_TABLE, alembic_config
from qcdr_response.db.models import metadata
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

pytestmark = pytest.mark.db

TABLES = {
    "response_received",
    "response_findings",
    "response_policies",
    "response_policy_versions",
    "response_finding_policy",
    "response_outbox",
    "response_dns_resolve_deny",
}

# the newest migration: every upgrade in these tests ends there
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def inspect_db(url: str) -> tuple[set[str], list[tuple[object, ...]]]:
    def run(connection: Connection) -> tuple[set[str], list[tuple[object, ...]]]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_name": lambda name, type_, _: type_ != "table" or name in metadata.tables,
            },
        )
        return set(inspect(connection).get_table_names()), compare_metadata(context, metadata)

    async def main() -> tuple[set[str], list[tuple[object, ...]]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_db_upgrade_is_idempotent_and_matches_the_models(
    response_database_url: str, fresh_settings: None
) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": response_database_url})
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith(f"is at revision {HEAD}")
    tables, differences = inspect_db(response_database_url)
    assert TABLES | {VERSION_TABLE} <= tables
    assert differences == []
