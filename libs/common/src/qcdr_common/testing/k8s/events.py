"""The test API server's change history and its open watches.

Every change the store commits gets the next resourceVersion and an ``Event`` here; a watch reads
the events after its resourceVersion (its cursor), so a watch started from a list's version sees
exactly what happened after the list, and a reconnect from the last version it saw loses nothing.
The history is bounded: a watch from a version older than what is kept is "expired" (410), as with
the real API server's compacted etcd and watch cache.

The store commits from any thread (the server's event loop for HTTP requests, the test's thread for
``seed()``), and watches wait on their own event loop: ``Watcher.notify`` crosses over with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class Event:
    """One committed change. ``obj`` is the object after it (for DELETED: the last state, carrying the
    deletion's resourceVersion); ``prev`` the object before it (None for ADDED)."""

    rv: int
    type: EventType
    group: str
    kind: str
    namespace: str | None
    obj: Mapping[str, Any]
    prev: Mapping[str, Any] | None


class Watcher:
    """One open watch: woken on every change, closed by ``close_watches()`` or server shutdown."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wake = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        # a closed loop (RuntimeError): the server is gone and nobody waits any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.wake.set)

    def close(self) -> None:
        self.closed = True
        self.notify()


class EventHistory:
    """The last ``limit`` events, in resourceVersion order, and the open watches."""

    def __init__(self, start_rv: int, limit: int = 1000) -> None:
        if limit < 1:
            raise ValueError("the watch history must keep at least one event")
        self.limit = limit
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._floor = start_rv  # every event after this version is still kept
        self._watchers: set[Watcher] = set()
        self._stopped = False

    # ------------------------------------------------------------------ history

    def record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) > self.limit:
                dropped = len(self._events) - self.limit
                self._floor = self._events[dropped - 1].rv
                del self._events[:dropped]
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.notify()

    def since(self, rv: int) -> list[Event] | None:
        """The events after ``rv``; None when some of them are no longer kept (expired)."""
        with self._lock:
            if rv < self._floor:
                return None
            start = bisect.bisect_right(self._events, rv, key=lambda e: e.rv)
            return self._events[start:]

    @property
    def floor(self) -> int:
        """The oldest resourceVersion a watch can still start from."""
        with self._lock:
            return self._floor

    def compact(self, rv: int) -> None:
        """Forget every event up to ``rv``: watches from older versions get 410 Expired."""
        with self._lock:
            self._events = [e for e in self._events if e.rv > rv]
            self._floor = max(self._floor, rv)

    # ------------------------------------------------------------------ watches

    def register(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.add(watcher)
            if self._stopped:
                watcher.closed = True

    def unregister(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    def close_all(self) -> int:
        """End every open watch (their clients reconnect); returns how many there were."""
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.close()
        return len(watchers)

    def stop(self) -> None:
        """Server shutdown: end every watch, and every watch opened from now on at once."""
        with self._lock:
            self._stopped = True
        self.close_all()

    def resume(self) -> None:
        with self._lock:
            self._stopped = False
