"""Sleeping in background loops that stop promptly."""

from __future__ import annotations

import asyncio
import contextlib


async def pause(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; True when stopped."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
