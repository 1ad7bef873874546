"""With per-source watermarks, one (source, cluster) stuck at an old event time holds ``W`` back by
``source_max_lag_s`` at most, so the buffer (and its checkpoint) stays bounded instead of keeping
every matching item of every cluster for as long as the stuck source keeps delivering."""

from __future__ import annotations

from qcdr_analysis.correlation import Engine, load_patterns

from tests.analysis.test_correlation import T0, event


def _run(max_lag_s: float) -> Engine:
    wall = [T0.timestamp()]
    engine = Engine(load_patterns(), clock=lambda: wall[0], source_idle_s=60, source_max_lag_s=max_lag_s)
    per_batch = 50
    for b in range(200):  # 10,000 matching items, one a second of event time
        wall[0] = T0.timestamp() + (b + 1) * per_batch
        stuck = event((), 0, source="falco", cluster="stuck", container="x", id=f"stuck-{b}")
        live = [
            event(("T1059.004",), b * per_batch + i, source="tetragon", cluster="prod", container=f"c{b}-{i}")
            for i in range(per_batch)
        ]
        engine.feed([stuck, *live])
    return engine


def test_a_stuck_source_holds_the_buffer_back_by_the_max_lag_at_most() -> None:
    engine = _run(max_lag_s=600)
    # items of the last max lag plus the lateness, one a second, plus a batch in flight
    assert engine.buffered <= 600 + engine._lateness + 50
    assert len(engine._seen) <= 600 + 2 * engine._lateness + 50


def test_within_the_max_lag_the_slowest_source_still_governs() -> None:
    engine = _run(max_lag_s=1e9)  # effectively unbounded: everything since T0 waits
    assert engine.buffered > 9_000
