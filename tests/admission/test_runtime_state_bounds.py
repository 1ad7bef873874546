"""Admission's open runtime findings are bounded: a finding stamped in the future is open for the
window from now, not until its event time plus the window, and at most ``max_open`` are held."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qcdr_admission.runtime.state import RuntimeState
from qcdr_common.contracts.findings.v1 import Finding

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = 24 * 3600


def _finding(n: int, when: datetime) -> Finding:
    data: dict[str, Any] = {
        "id": f"source:{n:032x}",
        "kind": "source",
        "detector": "source",
        "category": "Terminal shell in container",
        "severity": "critical",
        "event_time": when,
        "workload": {"namespace": f"ns-{n % 7}", "image": f"r.io/app-{n % 5}:1"},
    }
    return Finding.model_validate(data)


def test_a_future_event_time_is_open_for_the_window_from_now() -> None:
    clock = [NOW.timestamp()]
    state = RuntimeState(window_s=DAY, clock=lambda: clock[0])
    for n in range(100):
        state.add(_finding(n, datetime(2199, 1, 1, tzinfo=UTC)))
    assert len(state.for_namespace("ns-1")) > 0  # open now: it still counts for admission
    clock[0] += DAY + 1
    state.expire()
    assert len(state) == 0
    assert state.for_namespace("ns-1") == []


def test_at_most_max_open_and_the_soonest_to_expire_go_first() -> None:
    clock = [NOW.timestamp()]
    state = RuntimeState(window_s=DAY, max_open=100, clock=lambda: clock[0])
    for n in range(300):  # oldest first: n seconds after an hour ago
        state.add(_finding(n, datetime.fromtimestamp(NOW.timestamp() - 3600 + n, UTC)))
    assert len(state) == 100
    kept = {issue.id for ns in range(7) for issue in state.for_namespace(f"ns-{ns}")}
    assert kept == {f"source:{n:032x}" for n in range(200, 300)}


def test_refreshing_one_finding_again_and_again_keeps_the_expiry_heap_small() -> None:
    clock = [NOW.timestamp()]
    state = RuntimeState(window_s=DAY, clock=lambda: clock[0])
    for i in range(20_000):
        state.add(_finding(i % 5, datetime.fromtimestamp(NOW.timestamp() - 3600 + i, UTC)))
    assert len(state) == 5
    assert len(state._expiry) <= 2 * 5 + 1024 + 1
