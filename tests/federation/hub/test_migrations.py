"""The federation migrations build exactly the tables the models describe, and go down and up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from qcdr_federation.db import VERSION_TABLE, downgrade, upgrade
from qcdr_federation.db.models import metadata
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

pytestmark = [pytest.mark.db]

HUB_EXCHANGE = {"federation_received", "federation_findings", "federation_baselines", "federation_commands"}


def _diff(url: str) -> tuple[set[str], list[Any]]:
    def run(connection: Connection) -> tuple[set[str], list[Any]]:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "include_schemas": False}
        )
        return set(inspect(connection).get_table_names()), compare_metadata(context, metadata)

    async def main() -> tuple[set[str], list[Any]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_migrations_match_the_models(federation_database_url: str) -> None:
    tables, diff = _diff(federation_database_url)
    assert tables >= HUB_EXCHANGE
    assert diff == []


def test_0002_goes_down_and_up(scratch_database_url: str) -> None:
    upgrade(scratch_database_url, "0002")
    assert _diff(scratch_database_url)[0] >= HUB_EXCHANGE
    downgrade(scratch_database_url, "0001")
    tables = _diff(scratch_database_url)[0]
    assert not HUB_EXCHANGE & tables
    assert "federation_clusters" in tables
    upgrade(scratch_database_url, "head")
    tables, diff = _diff(scratch_database_url)
    assert tables >= HUB_EXCHANGE
    assert diff == []
