"""Old events (a node flushing days of buffer, a replay, a Qualys backfill) neither end a behaviour
profile's learning nor, once it is ready, teach its frozen baseline, nor start a new image's
learning in the past; a little lateness (node clocks, buffers) still moves the learning window
back, as before."""

from __future__ import annotations

from datetime import timedelta

from tests.analysis.conftest import T0
from tests.analysis.profiles_factory import HOURS, OTHER_DIGEST, PROFILE, detector, exec_event, learn_api, run


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


def test_a_new_image_first_seen_in_a_backfill_learns_from_what_is_watched_now() -> None:
    """A new image whose first event is three days old (a node flushing its buffer), then live
    events: it learns for the learning period from the present, not from three days ago (which
    would have it ready at once and raise everything it does next)."""
    state = detector()
    learn_api(state, hours=3)  # the profiler watches T0 + 2 h
    watched = T0 + 2 * HOURS
    assert state.watched == watched
    old = T0 - timedelta(days=3)
    run(state, exec_event("/usr/bin/sort", old, owner="batch", digest=OTHER_DIGEST, parent="/bin/sh"))
    newcomer = state.store.get(f"sha256:{OTHER_DIGEST}")
    assert newcomer is not None
    assert newcomer.first_seen == watched.timestamp()
    assert newcomer.ready_at == (watched + 48 * HOURS).timestamp()
    assert "/usr/bin/sort" in newcomer.processes  # the old event is learned all the same
    live = run(state, exec_event("/usr/bin/wget", T0 + 3 * HOURS, owner="batch", digest=OTHER_DIGEST))
    assert live == []
    assert newcomer.state == "learning"
    # an event that is only a little late is no backfill: a newcomer starts at its own time
    assert state.watched == T0 + 3 * HOURS
    a_little_late = T0 + 3 * HOURS - timedelta(minutes=30)
    run(state, exec_event("/bin/true", a_little_late, owner="lab", digest="0a" * 32))
    lab = state.store.get(f"sha256:{'0a' * 32}")
    assert lab is not None
    assert lab.first_seen == a_little_late.timestamp()
