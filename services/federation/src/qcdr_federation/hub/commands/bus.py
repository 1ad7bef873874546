"""Wake-ups for commands across hub replicas: a new command for cluster C (its spoke's long poll
may sit on another replica) and the answer to command X (its operator request may wait on another).

One Redis pub/sub subscription per process on ``<prefix>:federation:commands`` fans messages out
to in-process events. Waiters never trust it alone: they re-read the database at least every
``poll_s`` (0.5 s), so a lost message (Redis restarting) costs latency, never an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from qcdr_common.logging import get_logger
from redis.asyncio import Redis

log = get_logger("qcdr.federation.commands")

POLL_S = 0.5


def channel_name(prefix: str) -> str:
    return f"{prefix}:federation:commands"


class CommandBus:
    def __init__(self, redis: Redis, prefix: str, *, poll_s: float = POLL_S) -> None:
        self.redis = redis
        self.channel = channel_name(prefix)
        self.poll_s = poll_s
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def waiter(self, key: str) -> Iterator[asyncio.Event]:
        """An event set when ``key`` (``queued:<cluster id>`` or ``done:<command id>``) is announced."""
        event = asyncio.Event()
        self._waiters[key].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    async def announce(self, key: str) -> None:
        """Wake the waiters of ``key`` here at once and, through Redis, on the other replicas."""
        self._wake(key)
        try:
            await self.redis.publish(self.channel, key)
        except Exception as exc:  # the others fall back to polling the database
            log.warning("federation_command_publish_failed", key=key, error=repr(exc))

    async def wait(self, event: asyncio.Event, deadline: float) -> None:
        """Until ``event`` is set, the poll interval passes or ``deadline`` (loop time) is reached."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(self.poll_s, remaining))
        event.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay Redis messages to in-process waiters until ``stop`` (an ``in_background`` worker)."""
        while not stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while not stop.is_set():
                    # a short read timeout: ``stop`` is seen quickly at shutdown
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:  # Redis away: waiters poll the database meanwhile
                log.warning("federation_command_bus_failed", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
