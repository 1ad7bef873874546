"""Integration fixtures: a database of their own for tests that count rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest


@pytest.fixture
def own_database_url(base_database_url: str) -> Iterator[str]:
    """A fresh, empty database for one test: counts in it see only that test's rows."""
    name = f"qcdr_it_{uuid.uuid4().hex[:12]}"
    plain = base_database_url.replace("+asyncpg", "")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(plain)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield f"{base_database_url.rpartition('/')[0]}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
