"""Old events (a node flushing days of buffer, a replay, a Qualys backfill) neither end a behaviour
profile's learning nor, once it is ready, teach its frozen baseline; a little lateness (node clocks,
buffers) still moves the learning window back, as before."""

from __future__ import annotations

from datetime import timedelta

from tests.analysis.conftest import T0
from tests.analysis.profiles_factory import HOURS, PROFILE, detector, exec_event, learn_api, run


def test_one_old_event_does_not_end_learning_of_a_live_profile() -> None:
    state = detector()
    learn_api(state, hours=2)
    profile = state.store.get(PROFILE)
    assert profile is not None
    run(
        state, exec_event("/usr/local/bin/python3", T0 - timedelta(days=30), parent="/usr/local/bin/gunicorn")
    )
    findings = run(state, exec_event("/usr/bin/wget", T0 + 2 * HOURS, parent="/bin/sh"))
    assert profile.state == "learning"
    assert profile.ready_at == (T0 + 48 * HOURS).timestamp()
    assert findings == []


def test_an_old_event_after_ready_does_not_teach_the_frozen_baseline() -> None:
    state = detector()
    learn_api(state, hours=48)
    assert (
        run(state, exec_event("/usr/local/bin/python3", T0 + 49 * HOURS, parent="/usr/local/bin/gunicorn"))
        == []
    )
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.state == "ready"
    run(state, exec_event("/usr/bin/nc", T0 - timedelta(days=30), parent="/bin/sh"))
    assert "/usr/bin/nc" not in profile.processes
    findings = run(state, exec_event("/usr/bin/nc", T0 + 50 * HOURS, parent="/bin/sh"))
    assert "anomaly.unknown_process" in [f.category for f in findings]


def test_a_little_lateness_still_moves_the_window_back() -> None:
    state = detector()
    run(state, exec_event("/usr/local/bin/python3", T0, parent="/usr/local/bin/gunicorn"))
    run(state, exec_event("/usr/bin/curl", T0 - timedelta(minutes=5), parent="/bin/sh"))
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.first_seen == (T0 - timedelta(minutes=5)).timestamp()
    assert profile.ready_at == (T0 - timedelta(minutes=5) + 48 * HOURS).timestamp()
