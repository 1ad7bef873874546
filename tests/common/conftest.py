"""Fixtures of the common library's database tests: an engine on the test database and a scratch
outbox table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from qcdr_common.db import NAMING_CONVENTION, make_engine
from qcdr_common.streams import outbox_table
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def table(engine: AsyncEngine) -> AsyncIterator[Table]:
    """A ``<unique>_outbox`` table on a fresh MetaData, dropped afterwards."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)  # as the services' metadata has
    table = outbox_table(metadata, f"t{uuid.uuid4().hex[:10]}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield table
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
