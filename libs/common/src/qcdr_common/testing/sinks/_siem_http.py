"""What the Splunk HEC and Elasticsearch doubles share: programmed faults and request records.

Faults are consumed one per request, in the order they were programmed, and are thread-safe (the
doubles run in a uvicorn thread; tests program them from theirs):

- ``fail_next(n, status, retry_after=None, body=None)``: the next ``n`` requests are answered
  ``status`` (with ``body`` or the vendor's error body, and ``Retry-After`` when given), unprocessed;
- ``hang_next(n, seconds)``: the next ``n`` requests are read and processed as usual, then the
  answer waits ``seconds`` (past the client's timeout: the client cannot know it arrived).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer this instead of processing
    retry_after: float | None = None
    body: Any = None  # the answer's JSON body (default: the vendor's body for ``status``)
    hang_s: float = 0.0  # process, then wait this long before answering


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the double accepted (its body parsed by the double)."""

    path: str
    headers: dict[str, str]
    body: bytes
    items: list[dict[str, Any]] = field(default_factory=list)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()

    def fail_next(
        self, n: int = 1, status: int = 503, retry_after: float | None = None, body: Any = None
    ) -> None:
        with self._lock:
            self._queue.extend(Fault(status=status, retry_after=retry_after, body=body) for _ in range(n))

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        with self._lock:
            self._queue.extend(Fault(hang_s=seconds) for _ in range(n))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self) -> Fault | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None


def retry_after_headers(fault: Fault) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    return {"Retry-After": f"{fault.retry_after:g}"}


async def hang(fault: Fault | None) -> None:
    if fault is not None and fault.hang_s > 0:
        await asyncio.sleep(fault.hang_s)
