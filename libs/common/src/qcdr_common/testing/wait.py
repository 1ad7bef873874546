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
