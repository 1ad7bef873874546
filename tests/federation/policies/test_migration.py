"""Migration 0003 creates exactly the federated-policy tables the models describe, and goes down
and up again."""

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

pytestmark = pytest.mark.db

POLICY_TABLES = {
    "federation_policies",
    "federation_policy_versions",
    "federation_policy_status",
    "federation_policy_releases",
}


def inspect_db(url: str) -> tuple[set[str], list[object]]:
    """The tables there, and what differs from the models for the policy tables."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in POLICY_TABLES

    def run(connection: Connection) -> tuple[set[str], list[object]]:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": VERSION_TABLE, "compare_type": True, "include_object": include},
        )
        return set(inspect(connection).get_table_names()), list(compare_metadata(context, metadata))

    async def main() -> tuple[set[str], list[object]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_policy_tables_match_the_models_and_go_down_and_up(scratch_database_url: str) -> None:
    # 0003 made the policy tables, 0005 the rollout releases and suspension columns
    url = scratch_database_url
    upgrade(url)
    tables, differences = inspect_db(url)
    assert tables >= POLICY_TABLES
    assert differences == []
    assert downgrade(url, "0002") == "0002"
    tables, _ = inspect_db(url)
    assert not POLICY_TABLES & tables
    assert upgrade(url, "0003") == "0003"
    assert "federation_policy_releases" not in inspect_db(url)[0]
    upgrade(url)
    assert inspect_db(url)[1] == []
