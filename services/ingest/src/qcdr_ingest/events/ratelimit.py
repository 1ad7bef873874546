"""A token bucket per (API token, source), in process memory.

Each request costs as many tokens as it carries items; a bucket refills at ``rate`` per second up
to ``burst``. An over-limit request is refused whole with the seconds until it would fit (the
``Retry-After`` of the 429), so a client backs off instead of losing part of a batch. Buckets live
in the process: with N replicas the cluster-wide limit is N times this, which is what it is for
(keeping one noisy sender from starving the others and the database), not billing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_BUCKETS = 10_000


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst ≥ 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max = max_buckets
        # key -> (tokens, last refill); least recently used first, so the oldest go when full
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def wait_for(self, key: tuple[str, str]) -> int | None:
        """Seconds until the bucket holds one token again (None: it does now): a request is
        refused before its body is read when even one item could not pass."""
        found = self._buckets.get(key)
        if found is None:
            return None
        tokens = min(float(self.burst), found[0] + (self._clock() - found[1]) * self.rate)
        return None if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def take(self, key: tuple[str, str], cost: int) -> int | None:
        """Take ``cost`` tokens: None when allowed, else whole seconds to wait (≥ 1)."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if cost > tokens:
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((cost - tokens) / self.rate))
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return None
