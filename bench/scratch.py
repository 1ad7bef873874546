"""A throwaway PostgreSQL database for one benchmark run (``DATABASE_URL``'s server, dropped after)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def _sql(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def scratch_database(prefix: str, upgrade: Callable[[str], None] | None = None) -> Iterator[str]:
    """A new database ``qcdr_bench_<prefix>_<random>`` (migrated with ``upgrade`` when given);
    its SQLAlchemy URL until the block ends, then it is dropped."""
    base = os.environ.get("DATABASE_URL", DEFAULT_URL)
    admin = base.replace("+asyncpg", "")
    name = f"qcdr_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(admin, f'CREATE DATABASE "{name}"'))
    try:
        url = base.rsplit("/", 1)[0] + "/" + name
        if upgrade is not None:
            upgrade(url)
        yield url
    finally:
        asyncio.run(_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
