"""The analysis migrations: ``qcdr-analysis db upgrade`` is idempotent, and the schema matches the models."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from qcdr_analysis.cli import cli
from qcdr_analysis.db import VERSION_TABLE, current_revision, downgrade, upgrade
from qcdr_analysis.db.models import metadata
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

pytestmark = pytest.mark.db

ANALYSIS_TABLES = {
    "analysis_findings",
    "analysis_received",
    "analysis_outbox",
    "analysis_profiles",
    "analysis_profile_workloads",
    "analysis_baselines",
    "analysis_models",
    "analysis_input_clocks",
}


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


def test_db_upgrade_command_is_idempotent(scratch_database_url: str, fresh_settings: None) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": scratch_database_url})
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith("is at revision 0005")
    tables, differences = inspect_db(scratch_database_url)
    assert tables == ANALYSIS_TABLES | {VERSION_TABLE}  # its own version table, no "alembic_version"
    assert differences == []


def test_migrations_go_down_and_up(scratch_database_url: str) -> None:
    url = scratch_database_url
    assert current_revision(url) is None
    assert upgrade(url) == "0005"
    assert downgrade(url, "base") is None
    assert inspect_db(url)[0] == {VERSION_TABLE}
    assert upgrade(url.replace("+asyncpg", "")) == "0005"
    assert inspect_db(url)[1] == []


def test_db_upgrade_failure_is_one_line_without_the_password(fresh_settings: None) -> None:
    url = "postgresql+asyncpg://qcdr:s3cr3t-pw@127.0.0.1:1/qcdr"
    result = CliRunner().invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert "s3cr3t-pw" not in result.output
    assert result.output.strip().startswith("qcdr-analysis db upgrade failed on postgresql+asyncpg://***@")


def test_cli_has_the_service_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "consume", "replay", "db"):
        assert command in result.output
