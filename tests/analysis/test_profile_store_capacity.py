"""``profiles_in_memory`` holds when many images see only count changes: a stale profile (unsaved
counts) cannot be evicted, so over capacity the least recently used of them are saved at once
instead of waiting for ``count_flush_interval``. The steps are what the behaviour detector's
lookup, detect and persist do per batch, without Postgres."""

from __future__ import annotations

import types

import pytest
from qcdr_analysis.profiles import store as store_module
from qcdr_analysis.profiles.profile import Limits, Profile
from qcdr_analysis.profiles.store import ProfileStore


def test_capacity_holds_when_many_known_profiles_see_count_only_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    limits = Limits()
    store = ProfileStore(limits, capacity=1_000, flush_interval=30.0)
    per_batch = 300
    saved = 0
    for b in range(60):  # a batch a second for a minute: 18,000 images Postgres knows
        keys = {f"sha256:{b:04d}{i:060d}" for i in range(per_batch)}
        store.begin_batch(keys)
        for key in sorted(keys):
            store.load(Profile(key, limits, generation=1))
            store.mark(key, changed=False)  # an exec the profile knew: counts only
        due = store.due(clock[0])
        saved += len(due)
        store.written(due, clock[0])
        clock[0] += 1.0
        assert len(store.profiles) <= store.capacity + per_batch
    assert saved < 60 * per_batch  # the counts of what stayed under the cap still wait


def test_under_capacity_counts_wait_for_the_interval() -> None:
    limits = Limits()
    store = ProfileStore(limits, capacity=1_000, flush_interval=30.0)
    store.begin_batch({"sha256:a"})
    store.load(Profile("sha256:a", limits, generation=1))
    store.mark("sha256:a", changed=False)
    assert store.due(store.written_at["sha256:a"] + 1) == []
