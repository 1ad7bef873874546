"""Daily profiles of the workload anomaly engine: a workload busy by day and quiet at night is
scored against the hour it is in, so a night-time burst at a level the flat baseline calls normal
is found, ordinary days raise nothing, and a workload without a cycle keeps its flat baseline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import numpy as np
import pytest
from qcdr_analysis.anomaly import repository as repo
from qcdr_analysis.anomaly.config import WorkloadAnomalyConfig
from qcdr_analysis.anomaly.engine import WorkloadAnomalyEngine
from qcdr_analysis.anomaly.seasonal import HourlyMoments, SeasonalRule, hour_and_day, seasonal_features
from qcdr_analysis.anomaly.workload import WorkloadState
from qcdr_analysis.profiles.identity import profile_key
from qcdr_common.contracts.events.v1 import SecurityEvent, Workload
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.contracts.samples.v1 import WorkloadSample
from qcdr_common.db import make_engine, make_session_factory

from tests.analysis.exec_traffic import minute_of_execs

T0 = datetime(2026, 5, 4, tzinfo=UTC)  # a midnight (UTC)
DAY = 24 * 60  # minutes
# Five-minute windows keep two learning days at 576 windows a workload.
BASE: dict[str, Any] = {"learning_period": "P2D", "window": "PT5M", "smoothing_windows": 3}
CYCLIC = Workload(cluster="c1", namespace="shop", owner_kind="Deployment", owner_name="web", pod="web-1")
FLAT = Workload(cluster="c1", namespace="shop", owner_kind="Deployment", owner_name="queue", pod="queue-1")


def busy(minute: int, early: int = 0) -> bool:
    return 8 * 60 - early <= minute % DAY < 20 * 60 - early  # 08:00-20:00 UTC, or ``early`` before


class Cluster:
    """Executions and cpu samples a minute: ``web`` follows the working day (20 execs a minute
    and 1 cpu core by day, 2 execs and 0.3 cores at night), ``queue`` runs at 6 a minute always."""

    def __init__(self, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        self.ids = count(1)

    def minute(
        self, m: int, night_burst: int = 0, night_cpu: float = 0.3, early: int = 0
    ) -> tuple[list[SecurityEvent], list[WorkloadSample]]:
        events: list[SecurityEvent] = []
        web_rate = 20.0 if busy(m, early) else 2.0
        for workload, rate in ((CYCLIC, web_rate + night_burst), (FLAT, 6.0)):
            events += minute_of_execs(self.rng, rate, T0 + timedelta(minutes=m), workload, self.ids)
        cpu = 1.0 if busy(m, early) else night_cpu
        samples = [
            WorkloadSample(
                time=T0 + timedelta(minutes=m, seconds=30),
                workload=w,
                values={"cpu_cores": level * (1 + float(self.rng.normal(0, 0.04)))},
            )
            for w, level in ((CYCLIC, cpu), (FLAT, 0.5))
        ]
        events.sort(key=lambda e: e.event_time)
        return events, samples


def run(engine: WorkloadAnomalyEngine, cluster: Cluster, minutes: range, **inject: Any) -> list[Finding]:
    found: list[Finding] = []
    for m in minutes:
        events, samples = cluster.minute(m, **inject)
        engine.add_events(events)
        engine.add_samples(samples)
        if m % 5 == 4:
            found += engine.advance()
    return found


def engine_with(**config: Any) -> WorkloadAnomalyEngine:
    return WorkloadAnomalyEngine(
        WorkloadAnomalyConfig.model_validate({**BASE, "gauges": ["cpu_cores"], **config})
    )


def trends(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.category == "anomaly.trend"]


def state(engine: WorkloadAnomalyEngine, owner: str) -> WorkloadState:
    (found,) = [s for s in engine.states.values() if s.workload.owner_name == owner]
    return found


@pytest.fixture(scope="module")
def learnt() -> dict[str, tuple[WorkloadAnomalyEngine, Cluster]]:
    """One engine per mode after the two learning days (the same traffic for each)."""
    out = {}
    for mode in ("auto", "off"):
        engine, cluster = engine_with(seasonality=mode), Cluster()
        assert run(engine, cluster, range(0, 2 * DAY + 10)) == []
        out[mode] = (engine, cluster)
    return out


def rates(found: list[Finding], owner: str = "web") -> list[Finding]:
    return [f for f in found if f.category == "anomaly.rate" and f.attributes["workload_key"].endswith(owner)]


def test_auto_gives_the_cyclic_workload_a_profile_and_the_flat_one_none(learnt: Any) -> None:
    engine, _ = learnt["auto"]
    web, queue = state(engine, "web"), state(engine, "queue")
    assert web.baseline is not None
    assert queue.baseline is not None
    assert queue.baseline.daily is None  # no cycle: the flat baseline, as before
    daily = web.baseline.daily
    assert daily is not None
    seasonal = {n for n, f in zip(engine.names, daily.features, strict=True) if f}
    assert {"exec_count", "cpu_cores"} <= seasonal
    exec_i = engine.names.index("exec_count")
    # per five-minute window: 2 and 20 execs a minute
    assert daily.mean[3, exec_i] == pytest.approx(10.0, rel=0.25)  # 03:00, night
    assert daily.mean[14, exec_i] == pytest.approx(100.0, rel=0.1)  # 14:00, day
    assert web.baseline.at(3).mean[exec_i] < web.baseline.mean[exec_i] < web.baseline.at(14).mean[exec_i]
    assert web.hourly is None  # learning's per-hour moments are dropped once frozen


def test_a_night_time_burst_at_the_daytime_level_is_found_only_with_the_profile(learnt: Any) -> None:
    found = {}
    for mode, (engine, cluster) in learnt.items():
        # 00:10-03:00 of day three as usual, then 03:00-03:20 at 30 execs a minute: 15 times the
        # night's rate, but only 1.5 times the day's and under 3 times the flat average
        start = 2 * DAY + 10
        quiet = run(engine, cluster, range(start, 2 * DAY + 180))
        assert quiet == [], [f.title for f in quiet]
        burst = run(engine, cluster, range(2 * DAY + 180, 2 * DAY + 200), night_burst=28)
        found[mode] = burst + run(engine, cluster, range(2 * DAY + 200, 2 * DAY + 230))
    assert rates(found["off"]) == []  # the flat baseline averages day and night: it misses it
    (finding,) = rates(found["auto"])
    baseline = finding.attributes["baseline"]
    assert baseline["daily_profile"]["hour_utc"] == 3
    assert "exec_count" in baseline["daily_profile"]["features"]
    top = finding.attributes["explanation"]["deviations"][0]
    assert top["feature"] == "exec_count"
    assert top["baseline_mean"] < 15  # judged against the night (10 a window), not the day (100)
    assert rates(found["auto"], "queue") == []


def test_an_ordinary_day_raises_nothing_with_the_profile() -> None:
    engine, cluster = engine_with(seasonality="auto"), Cluster(seed=5)
    assert run(engine, cluster, range(0, 2 * DAY + 10)) == []
    assert state(engine, "web").baseline.daily is not None  # type: ignore[union-attr]
    # the third day: morning ramp, busy day, evening drop; rate and trend both stay quiet
    found = run(engine, cluster, range(2 * DAY + 10, 3 * DAY))
    assert found == [], [f.title for f in found]


def test_a_day_that_starts_and_ends_earlier_raises_nothing() -> None:
    # schedules drift: the third day's traffic starts at 07:20 and stops at 19:20, 40 minutes
    # before the hours it was learnt in; an hour is judged with its neighbours' limits too
    engine, cluster = engine_with(seasonality="auto"), Cluster(seed=5)
    assert run(engine, cluster, range(0, 2 * DAY + 10)) == []
    found = run(engine, cluster, range(2 * DAY + 10, 3 * DAY), early=40)
    assert found == [], [f.title for f in found]


def test_one_learning_day_is_not_enough_for_auto() -> None:
    engine, cluster = engine_with(learning_period="P1D", seasonality="auto"), Cluster()
    run(engine, cluster, range(0, DAY + 10))
    assert state(engine, "web").baseline.daily is None  # type: ignore[union-attr]
    # 'daily' trusts the operator: one day that saw every hour is enough
    engine, cluster = engine_with(learning_period="P1D", seasonality="daily"), Cluster()
    run(engine, cluster, range(0, DAY + 10))
    daily = state(engine, "web").baseline.daily  # type: ignore[union-attr]
    assert daily is not None
    assert daily.features.all()


def test_a_flat_series_rarely_looks_seasonal() -> None:
    # 200 workloads of pure noise: two learning days each, then the auto rule
    rng = np.random.default_rng(3)
    picked = 0
    for _ in range(200):
        hourly = HourlyMoments.zeros(1)
        for window in range(2 * 24 * 12):  # five-minute windows
            hour, day = hour_and_day(window * 300)
            hourly.add(day, hour, np.array([rng.poisson(6.0) / 1.0]))
        picked += int(seasonal_features(hourly, SeasonalRule("auto")).any())
    assert picked <= 1


def test_profiles_survive_a_checkpoint_while_learning_and_after(learnt: Any) -> None:
    engine, _ = learnt["auto"]
    web = state(engine, "web")
    restored = WorkloadState.from_json(web.key, web.to_json(), engine.config.reservoir_size, 1)
    assert restored.baseline is not None
    assert restored.baseline.daily is not None
    for hour in (3, 14):
        np.testing.assert_allclose(restored.baseline.at(hour).q3, web.baseline.at(hour).q3)  # type: ignore[union-attr]
    assert restored.reservoir.hours == web.reservoir.hours
    np.testing.assert_allclose(restored.standardized_rows(), web.standardized_rows())
    # mid-learning: the hourly moments go with the state
    fresh = engine_with(seasonality="auto")
    run(fresh, Cluster(), range(0, 300))
    learning = state(fresh, "web")
    assert learning.hourly is not None
    again = WorkloadState.from_json(learning.key, learning.to_json(), fresh.config.reservoir_size, 1)
    assert again.hourly is not None
    np.testing.assert_allclose(again.hourly.mean, learning.hourly.mean)


def test_a_state_saved_before_profiles_loads_and_learns_flat(learnt: Any) -> None:
    fresh = engine_with(seasonality="auto")
    run(fresh, Cluster(), range(0, 300))
    learning = state(fresh, "web")
    old = learning.to_json()
    del old["hourly"], old["reservoir"]["hours"]
    loaded = WorkloadState.from_json(learning.key, old, fresh.config.reservoir_size, 1)
    assert loaded.hourly is None
    assert loaded.reservoir.known_hours() is None
    fresh.install_states([loaded])
    run(fresh, Cluster(seed=2), range(300, 2 * DAY + 10))
    assert loaded.baseline is not None
    assert loaded.baseline.daily is None


def test_the_population_rows_are_standardised_by_their_hour(learnt: Any) -> None:
    engine, _ = learnt["auto"]
    web = state(engine, "web")
    exec_i = engine.names.index("exec_count")
    rows = web.standardized_rows()[:, exec_i]
    # against the flat baseline, day and night rows sit at two distant levels; by hour, near 0
    assert abs(float(np.median(rows))) < 1.0
    assert float(np.percentile(np.abs(rows), 90)) < 3.0


def test_a_level_that_rises_only_at_night_is_a_trend_only_with_the_profile() -> None:
    # cpu doubles at night (0.3 -> 0.6 cores) from the third day, still under the daytime 1.0:
    # against the flat level (0.65) the night never looks high; against its hour it does
    found = {}
    for mode in ("auto", "off"):
        # one-minute windows: the EWMA's lambda (0.01) is set for them
        engine, cluster = engine_with(seasonality=mode, window="PT1M", smoothing_windows=5), Cluster(seed=4)
        assert run(engine, cluster, range(0, 2 * DAY + 10)) == []
        found[mode] = run(engine, cluster, range(2 * DAY + 10, 2 * DAY + 7 * 60), night_cpu=0.6)
    assert trends(found["off"]) == []
    (trend,) = trends(found["auto"])
    assert trend.attributes["workload_key"].endswith("web")
    assert trend.attributes["explanation"]["feature"] == "cpu_cores"
    assert trend.event_time < T0 + timedelta(days=2, hours=4)  # within the night it started
    # the doubling is also a level shift against the hour (gauge_min_relative 1.0 = doubles)
    assert rates(found["off"]) == []
    for rate in rates(found["auto"]):
        assert {d["feature"] for d in rate.attributes["explanation"]["deviations"]} == {"cpu_cores"}


async def test_postgres_keeps_the_profile_and_the_profiles_api_shows_it(learnt: Any, db: str) -> None:
    engine, _ = learnt["auto"]
    pg = make_engine(db)
    try:
        sessions = make_session_factory(pg)
        copies = [
            WorkloadState.from_json(s.key, s.to_json(), engine.config.reservoir_size, 0)
            for s in (state(engine, "web"), state(engine, "queue"))
        ]
        async with sessions.begin() as session:
            await repo.save_states(session, copies)
        async with sessions.begin() as session:
            (loaded,) = await repo.states_for(session, profile=profile_key(CYCLIC))
            web = await repo.feature_baselines(session, profile_key(CYCLIC))
            queue = await repo.feature_baselines(session, profile_key(FLAT))
    finally:
        await pg.dispose()
    assert loaded.baseline is not None
    assert loaded.baseline.daily is not None
    by_name = {f["feature"]: f for f in web[0]["features"]}  # type: ignore[attr-defined]
    hourly = by_name["exec_count"]["hourly_mean"]
    assert len(hourly) == 24
    assert hourly[3] < 15 < 90 < hourly[14]
    assert all(f["hourly_mean"] is None for f in queue[0]["features"])  # type: ignore[attr-defined]


def test_with_seasonality_off_learning_keeps_nothing_per_hour() -> None:
    engine, cluster = engine_with(seasonality="off"), Cluster()
    run(engine, cluster, range(0, 60))
    learning = state(engine, "web")
    assert learning.hourly is None
    assert learning.to_json()["hourly"] is None
