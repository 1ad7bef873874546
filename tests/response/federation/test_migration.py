"""Migration 0004: the ``federation`` origin column goes down and up again and matches the model."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from qcdr_response.db import current_revision, downgrade, upgrade

from tests.response.service.test_migrations import HEAD, inspect_db

pytestmark = pytest.mark.db


def columns(url: str) -> dict[str, tuple[str, str]]:
    async def main() -> dict[str, tuple[str, str]]:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            rows = await connection.fetch(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = 'response_policies'"
            )
        finally:
            await connection.close()
        return {r["column_name"]: (r["data_type"], r["is_nullable"]) for r in rows}

    return asyncio.run(main())


def test_0004_adds_the_federation_origin_and_goes_back(scratch_database_url: str) -> None:
    upgrade(scratch_database_url)
    assert current_revision(scratch_database_url) == HEAD
    assert columns(scratch_database_url)["federation"] == ("jsonb", "YES")
    assert inspect_db(scratch_database_url)[1] == []

    downgrade(scratch_database_url, "0003")
    assert current_revision(scratch_database_url) == "0003"
    assert "federation" not in columns(scratch_database_url)

    upgrade(scratch_database_url)
    assert columns(scratch_database_url)["federation"] == ("jsonb", "YES")
