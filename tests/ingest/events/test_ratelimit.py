"""The per-token, per-source token bucket."""

from __future__ import annotations

import pytest
from qcdr_ingest.events.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10, burst=100, clock=clock)
    key = ("alice", "falco")
    assert buckets.take(key, 100) is None
    assert buckets.wait_for(key) == 1
    assert buckets.take(key, 30) == 3  # 30 tokens at 10/s
    clock.now += 3
    assert buckets.wait_for(key) is None
    assert buckets.take(key, 30) is None
    assert buckets.take(("alice", "tetragon"), 100) is None  # another source has its own bucket
    assert buckets.take(("bob", "falco"), 100) is None  # and so has another token


def test_refused_requests_take_nothing_and_buckets_are_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1, burst=5, clock=clock, max_buckets=2)
    assert buckets.take(("a", "s"), 6) == 1
    assert buckets.take(("a", "s"), 5) is None  # the refusal took nothing
    for name in "bcd":
        buckets.take((name, "s"), 1)
    assert len(buckets._buckets) == 2
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(rate=0, burst=1)
