"""Retry pacing for the spoke's calls to the hub and its response API and for the hub controller's
watches: exponential back-off with full jitter (a random wait between 0 and the capped exponential
step, so that many spokes cut off by the same outage do not come back in lock-step), and waits that
end early when the agent stops."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """``next_delay()`` grows 2x per failure up to ``cap_s``; ``reset()`` after a success."""

    def __init__(self, cap_s: float, *, base_s: float = 0.5, rng: random.Random | None = None) -> None:
        if cap_s <= 0 or base_s <= 0:
            raise ValueError("cap_s and base_s must be positive")
        self.cap_s = cap_s
        self.base_s = min(base_s, cap_s)
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next wait (no jitter)."""
        return float(min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 62)))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; True when stopped."""
    if seconds > 0:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


class StoppedError(Exception):
    """The agent stopped while a long call was in flight (the call was cancelled)."""


async def unless_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T:
    """Await ``awaitable`` but give up (cancel it, raise :class:`StoppedError`) once ``stop`` is set:
    a long poll held open by the hub must not hold up a shutdown."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await task
    raise StoppedError
