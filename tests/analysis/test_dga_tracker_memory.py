"""The per-pod DGA tracker forgets pods that went quiet and holds at most ``max_pods``: short-lived
pods (CronJobs, rollouts) or invented pod names must not grow it for the life of the process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qcdr_analysis.detectors import dga
from qcdr_common.contracts.events.v1 import SecurityEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dns(pod: str, t: datetime, n: int, domain: str = "api.stripe.com") -> SecurityEvent:
    return SecurityEvent.model_validate(
        {
            "id": f"dns-{n}",
            "source": "hubble",
            "category": "dns_query",
            "severity": "info",
            "event_time": t,
            "workload": {"cluster": "prod", "namespace": "shop", "pod": pod},
            "network": {"domain": domain},
        }
    )


def test_pods_quiet_for_a_window_leave_the_tracker() -> None:
    """5,000 pods, one query each, one every 2 s of this process's time."""
    state = dga.setup(dga.Config())
    now = [0.0]
    state.get_tracker().clock = lambda: now[0]
    for start in range(0, 5_000, 500):
        dga.detect(
            [_dns(f"job-{i}", T0 + i * timedelta(seconds=2), i) for i in range(start, start + 500)], state
        )
        now[0] += 1_000.0
    # pods leave after two windows (1,200 s) without a query: only the last two batches' are left
    assert len(state.get_tracker()) <= 1_000


def test_a_pod_of_a_cluster_running_behind_the_others_still_raises() -> None:
    """A spoke catching up 15 minutes behind the live clusters: its pods are not quiet."""
    names = ["xjwqpzkvhrtb.com", "qzvkxwpjmrtn.net", "bvkxqzjwprtm.org", "mzqxkvjwtprb.info"]
    state = dga.setup(dga.Config())
    found = []
    for i in range(4):
        t = T0 + timedelta(minutes=2 * i)
        batch = [_dns(f"web-{j}", t, 1000 * i + j) for j in range(5)]
        lagging = _dns("infected", t - timedelta(minutes=15), 10_000 + i, names[i])
        lagging = lagging.model_copy(
            update={"workload": lagging.workload.model_copy(update={"cluster": "spoke"})}
        )
        batch.append(lagging)
        found += dga.detect(batch, state)
    assert [f.workload.pod for f in found] == ["infected"]


def test_a_flood_of_pod_names_within_one_window_stops_at_max_pods() -> None:
    state = dga.setup(dga.Config(max_pods=1_000))
    dga.detect([_dns(f"fake-{i}", T0 + timedelta(milliseconds=i), i) for i in range(3_000)], state)
    assert len(state.get_tracker()) == 1_000


def test_an_event_stamped_far_in_the_future_does_not_empty_the_tracker() -> None:
    now = datetime.now(UTC)
    state = dga.setup(dga.Config())
    dga.detect([_dns(f"pod-{i}", now, i) for i in range(50)], state)
    dga.detect([_dns("liar", datetime(2199, 1, 1, tzinfo=UTC), 99)], state)
    assert len(state.get_tracker()) == 51


def test_a_pod_that_keeps_asking_is_kept_and_still_raises() -> None:
    state = dga.setup(dga.Config())
    names = ["xjwqpzkvhrtb.com", "qzvkxwpjmrtn.net", "bvkxqzjwprtm.org", "mzqxkvjwtprb.info"]
    found = []
    for i in range(4):
        # the pod asks once every 4 minutes while 400 other pods come and go
        batch = [_dns(f"other-{i}-{j}", T0 + timedelta(minutes=4 * i), 1000 * i + j) for j in range(400)]
        batch.append(_dns("infected", T0 + timedelta(minutes=4 * i), 10_000 + i, names[i]))
        found += dga.detect(batch, state)
    assert [f.workload.pod for f in found] == ["infected"]


def test_a_query_older_than_the_pods_window_is_not_counted_with_its_live_queries() -> None:
    """A node flushing a query it buffered two days ago: the pod's queues are in time order and
    expire from the front, so a late query would sit in today's window."""
    names = ["xjwqpzkvhrtb.com", "qzvkxwpjmrtn.net", "bvkxqzjwprtm.org"]
    state = dga.setup(dga.Config())
    assert (
        dga.detect([_dns("api", T0, 1, names[0]), _dns("api", T0 + timedelta(minutes=1), 2, names[1])], state)
        == []
    )
    assert dga.detect([_dns("api", T0 - timedelta(days=2), 3, names[2])], state) == []
    # the same name live raises: the names do count together when they are together
    assert len(dga.detect([_dns("api", T0 + timedelta(minutes=2), 4, names[2])], state)) == 1


def test_a_query_stamped_with_go_zero_time_neither_crashes_nor_blinds_the_pod() -> None:
    """Go sources (Hubble, Tetragon) print 0001-01-01T00:00:00Z for an unset timestamp and ingest
    accepts any past time: ``time - window`` is before year 1. Neither as the pod's first query
    nor amid its live ones may that raise, or stay in the pod so its later queries raise too."""
    names = ["xjwqpzkvhrtb.com", "qzvkxwpjmrtn.net", "bvkxqzjwprtm.org"]
    zero = datetime(1, 1, 1, tzinfo=UTC)
    state = dga.setup(dga.Config())
    assert dga.detect([_dns("first", zero, 1, names[0]), _dns("amid", T0, 2, names[0])], state) == []
    assert dga.detect([_dns("amid", zero, 3, names[1])], state) == []
    walk = [
        _dns(pod, T0 + timedelta(minutes=1 + i), 10 + i, name)
        for i, name in enumerate(names)
        for pod in ("first", "amid")
    ]
    assert sorted(str(f.workload.pod) for f in dga.detect(walk, state)) == ["amid", "first"]
