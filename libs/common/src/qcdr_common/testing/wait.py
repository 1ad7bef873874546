"""Polling until a condition holds, for tests of services that get there asynchronously."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def eventually(check: Callable[[], Any], *, within: float = 30.0, every: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy, and return that; AssertionError with the
    last value after ``within`` seconds."""
    deadline = time.monotonic() + within
    value: Any = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {within} s; last value: {value!r}")


async def eventually_async(
    check: Callable[[], Awaitable[bool]],
    within_s: float = 20.0,
    *,
    what: str = "the condition",
    every: float = 0.05,
) -> None:
    """Await ``check`` until it holds; TimeoutError naming ``what`` after ``within_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} did not hold within {within_s} s")
        await asyncio.sleep(every)


async def until_a_session_waits_for_a_lock(database_url: str, within_s: float = 10.0) -> bool:
    """Until a session of ``database_url``'s database waits for a lock (a row, a transaction, an
    advisory lock); True then, False after ``within_s`` seconds without one.

    For tests of a race between two transactions: the one holding the lock waits here for the
    other to be blocked on it instead of sleeping and hoping it is by then (on a busy machine it
    may not be, and the test would pass without the race). Without the lock the code under test
    should take, nothing waits: the caller goes on after ``within_s`` and the race shows."""
    import asyncpg  # the testing helpers' other users need no database driver

    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            waiting = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
    finally:
        await connection.close()
