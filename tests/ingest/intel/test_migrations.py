"""The ingest migrations: ``qcdr-ingest db upgrade`` is idempotent, and the schema matches the models."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from qcdr_ingest.cli import cli
from qcdr_ingest.db import VERSION_TABLE, current_revision, downgrade, upgrade
from qcdr_ingest.db.models import metadata
from qcdr_ingest.settings import get_settings
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

pytestmark = pytest.mark.db

INGEST_TABLES = {
    "intel_feed_state",
    "intel_reputation",
    "ingest_events",
    "ingest_outbox",
    "ingest_watermarks",
    "intel_indicators",
    "intel_indicator_state",
    "intel_domains",
    "ingest_images",
    "intel_reputation_queue",
}
HEAD = "0005"


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def inspect_db(url: str) -> tuple[set[str], list[tuple[object, ...]]]:
    """(table names, differences between the models and the database)."""

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


def test_db_upgrade_command_is_idempotent(database_url: str, fresh_settings: None) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": database_url})
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith(f"is at revision {HEAD}")
    tables, differences = inspect_db(database_url)
    assert INGEST_TABLES | {VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # each service keeps its own version table
    assert differences == []


def test_db_upgrade_reports_failures_on_one_line_without_the_password(fresh_settings: None) -> None:
    url = "postgresql+asyncpg://qcdr:s3cr3t-pw@127.0.0.1:1/qcdr"
    result = CliRunner().invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert "s3cr3t-pw" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("qcdr-ingest db upgrade failed on postgresql+asyncpg://***@")


def test_migrations_match_the_models_and_go_down_and_up(scratch_database_url: str) -> None:
    url = scratch_database_url
    assert current_revision(url) is None
    assert upgrade(url) == HEAD
    tables, differences = inspect_db(url)
    assert tables == INGEST_TABLES | {VERSION_TABLE}
    assert differences == []
    assert downgrade(url, "base") is None
    assert inspect_db(url)[0] == {VERSION_TABLE}
    assert upgrade(url.replace("+asyncpg", "")) == HEAD  # a plain postgresql:// URL works too


def test_concurrent_upgrades_wait_for_each_other(scratch_database_url: str) -> None:
    # separate processes, like a compose one-shot and a Job started together (Alembic's
    # module-level context does not allow two migrations in one process anyway)
    code = "import sys; from qcdr_ingest.db import upgrade; print(upgrade(sys.argv[1]))"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, scratch_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == HEAD
    assert current_revision(scratch_database_url) == HEAD


async def test_upgrade_refuses_to_run_inside_an_event_loop(database_url: str) -> None:
    with pytest.raises(RuntimeError, match="runs its own event loop"):
        upgrade(database_url)
