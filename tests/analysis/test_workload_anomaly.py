"""The workload anomaly engine: learning by event time, bursts, slow shifts, explanations,
persistence across a restart (real Postgres), and the samples handler."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import numpy as np
import pytest
from qcdr_analysis import input_clocks
from qcdr_analysis.anomaly import repository as repo
from qcdr_analysis.anomaly.config import WorkloadAnomalyConfig
from qcdr_analysis.anomaly.engine import WorkloadAnomalyEngine
from qcdr_analysis.anomaly.handlers import SamplesHandler
from qcdr_analysis.anomaly.stack import InMemoryStack
from qcdr_analysis.anomaly.trainer import ModelTrainer
from qcdr_analysis.anomaly.workload import WorkloadState
from qcdr_analysis.detectors import workload_anomaly
from qcdr_analysis.findings.service import DetectorSet
from qcdr_analysis.profiles import service as profiles
from qcdr_analysis.streams import SAMPLES_RECEIVED
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity, Workload
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.contracts.samples.v1 import WorkloadSample, WorkloadSamples
from qcdr_common.db import make_session_factory
from qcdr_common.streams import Delivery, new_envelope
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.exec_traffic import minute_of_execs

T0 = datetime(2026, 5, 4, tzinfo=UTC)
CONFIG: dict[str, Any] = {"learning_period": "PT2H", "refit_every": "PT1H"}


def workloads(n: int) -> list[Workload]:
    return [
        Workload(
            cluster="c1",
            namespace=f"ns{i % 4}",
            owner_kind="Deployment",
            owner_name=f"app{i}",
            pod=f"app{i}-7d4b9c-x{i}",
            image_digest=f"sha256:{i:064x}",
        )
        for i in range(n)
    ]


class Traffic:
    """Poisson executions and one cpu sample a minute per workload, with what a test injects."""

    def __init__(self, n: int = 12, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.workloads = workloads(n)
        self.rates = self.rng.uniform(1.0, 4.0, n)
        self.cpu = self.rng.uniform(0.2, 1.5, n)
        self.ids = count(1)

    def minute(
        self, m: int, *, burst: int | None = None, drift: int | None = None, drift_from: int = 0
    ) -> tuple[list[SecurityEvent], list[WorkloadSample]]:
        events, samples = [], []
        for i, w in enumerate(self.workloads):
            rate = self.rates[i] * (10 if i == burst else 1)
            events += minute_of_execs(self.rng, rate, T0 + timedelta(minutes=m), w, self.ids)
            level = self.cpu[i] * (1.03 ** ((m - drift_from) / 60) if i == drift and m > drift_from else 1)
            samples.append(
                WorkloadSample(
                    time=T0 + timedelta(minutes=m, seconds=30),
                    workload=w,
                    values={"cpu_cores": max(0.0, level * (1 + float(self.rng.normal(0, 0.04))))},
                )
            )
        events.sort(key=lambda e: e.event_time)
        return events, samples


def run(stack: InMemoryStack, traffic: Traffic, minutes: range, **inject: Any) -> list[Finding]:
    found: list[Finding] = []
    for m in minutes:
        events, samples = traffic.minute(m, **inject)
        found += stack.observe(events, samples)
    return found


@pytest.fixture
def stack() -> InMemoryStack:
    return InMemoryStack.configure({"workload_anomaly": CONFIG}, only=("workload_anomaly",))


def engine_of(stack: InMemoryStack) -> WorkloadAnomalyEngine:
    assert stack.engine is not None
    return stack.engine


def test_learning_ends_by_event_time_not_wall_clock(stack: InMemoryStack) -> None:
    traffic = Traffic()
    assert run(stack, traffic, range(60)) == []
    assert not any(s.ready for s in engine_of(stack).states.values())
    run(stack, traffic, range(60, 125))
    assert all(s.ready for s in engine_of(stack).states.values())
    assert stack.fits == 1  # enough ready workloads: the population models were fitted


def test_a_burst_is_found_within_minutes_with_its_explanation(stack: InMemoryStack) -> None:
    traffic = Traffic()
    quiet = run(stack, traffic, range(0, 240))
    assert quiet == []  # no false alarm over two hours of normal traffic in 12 workloads
    found = run(stack, traffic, range(240, 245), burst=5)
    found += run(stack, traffic, range(245, 260))
    rates = [f for f in found if f.category == "anomaly.rate"]
    assert len(rates) == 1, [f.title for f in found]  # one finding per episode (cooldown)
    finding = rates[0]
    assert finding.attributes["workload_key"] == "c1/ns1/Deployment/app5"
    assert finding.event_time <= T0 + timedelta(minutes=245)
    explanation = finding.attributes["explanation"]
    top = explanation["deviations"][0]
    assert top["feature"] in ("exec_count", "distinct_binaries")
    assert top["value"] > 3 * top["baseline_mean"]
    assert {"zscore", "iqr"} <= set(explanation["votes"])
    assert explanation["isolation_forest"] is not None  # the model existed and scored it
    assert "exec_count" in finding.explanation
    assert "against" in finding.explanation
    assert finding.techniques == ("T1059",)
    assert finding.evidence_event_ids


def test_a_slow_rise_of_a_resource_is_a_trend_finding(stack: InMemoryStack) -> None:
    traffic = Traffic()
    run(stack, traffic, range(0, 121))
    found = run(stack, traffic, range(121, 121 + 10 * 60), drift=3, drift_from=121)
    trends = [f for f in found if f.category == "anomaly.trend"]
    assert [f.attributes["workload_key"] for f in trends] == ["c1/ns3/Deployment/app3"]
    explanation = trends[0].attributes["explanation"]
    assert explanation["feature"] == "cpu_cores"
    assert explanation["relative_shift"] >= 0.10
    assert not [f for f in found if f.attributes["workload_key"] != "c1/ns3/Deployment/app3"]


def test_late_events_are_counted_not_misplaced(stack: InMemoryStack) -> None:
    traffic = Traffic(n=3)
    run(stack, traffic, range(0, 10))
    engine = engine_of(stack)
    late = SecurityEvent(
        id="late",
        source="tetragon",
        category="process_exec",
        severity=Severity.INFO,
        event_time=T0,
        workload=traffic.workloads[0],
    )
    stack.observe([late])
    assert engine.late_events == 1


def test_a_new_workload_first_seen_in_a_backfill_learns_from_what_is_watched_now(
    stack: InMemoryStack,
) -> None:
    """Its first event three days old (a node flushing its buffer), then live minutes: the learning
    period counts from the live stream, not from the old event."""
    traffic = Traffic(n=3)
    run(stack, traffic, range(0, 5))  # the engine watches T0 .. T0+5 min
    newcomer = workloads(4)[3]
    old = SecurityEvent(
        id="backfilled",
        source="tetragon",
        category="process_exec",
        severity=Severity.INFO,
        event_time=T0 - timedelta(days=3),
        workload=newcomer,
        process={"path": "/bin/sh"},
    )
    stack.observe([old])
    for m in range(5, 20):  # a quarter of an hour of live traffic, the newcomer included
        events, samples = traffic.minute(m)
        events += minute_of_execs(traffic.rng, 2.0, T0 + timedelta(minutes=m), newcomer, traffic.ids)
        stack.observe(sorted(events, key=lambda e: e.event_time), samples)
    states = [s for s in engine_of(stack).states.values() if s.workload.owner_name == newcomer.owner_name]
    assert len(states) == 1
    assert not states[0].ready  # two hours of learning, not "three days since the first event"
    # and so after a restart: the state read back from Postgres still learns from the live stream
    restored = WorkloadState.from_json(states[0].key, states[0].to_json(), 512, 1)
    assert restored.learning_start(0) == states[0].learning_start(0) > restored.first_window  # type: ignore[operator]


@pytest.mark.parametrize("across_calls", [False, True], ids=["in one call", "back after the gap"])
@pytest.mark.parametrize("gap", [4, 10, 30 * 24 * 60], ids=["4 min", "10 min", "30 days"])
def test_a_gap_between_active_windows_is_zeros_up_to_idle_after_and_quiet_beyond(
    gap: int, across_calls: bool
) -> None:
    """Windows between two active ones count as zero for ``idle_after`` (10 windows), as they do
    after the newest one; beyond, the gap is quiet and skipped in one step. Before, a gap ahead of
    the newest window was never quiet: a workload back after 30 days, or one event stamped long ago
    beside live ones, closed each of the 43,200 windows between (29 million from the epoch)."""
    state = WorkloadState("k", workloads(1)[0], 0, 16)
    state.bucket(0)
    closed = state.close_until(1, idle_windows=10, smoothing=5) if across_calls else []
    state.bucket(gap + 1)
    closed += state.close_until(gap + 2, idle_windows=10, smoothing=5)
    assert [w.number for w in closed] == [0, *range(1, min(gap, 10) + 1), gap + 1]
    assert len(state.recent) == (1 if gap > 10 else 5)  # smoothing starts afresh after a quiet gap


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("stamp", [EPOCH, GO_ZERO_TIME], ids=["the Unix epoch", "Go's zero time"])
def test_an_unset_timestamp_beside_live_events_neither_stalls_nor_breaks_the_engine(
    stack: InMemoryStack, stamp: datetime
) -> None:
    """An unset timestamp printed as the epoch or Go's zero time (ingest accepts any past time),
    alone in the first batch, then in a new workload's batch beside live events. Alone, year 1
    made ``newest - input_stall`` overflow; beside live events the engine closed every minute
    since 1970 or year 1 one by one, the event loop blocked."""
    traffic = Traffic(n=2)
    newcomer = workloads(3)[2]

    def unset(workload: Workload) -> SecurityEvent:
        return SecurityEvent(
            id=f"unset-{workload.owner_name}",
            source="tetragon",
            category="process_exec",
            severity=Severity.INFO,
            event_time=stamp,
            workload=workload,
            process={"path": "/bin/sh"},
        )

    stack.observe([unset(traffic.workloads[0])])
    events, samples = traffic.minute(0)
    events += [unset(newcomer), *minute_of_execs(traffic.rng, 2.0, T0, newcomer, traffic.ids)]
    stack.observe(events, samples)
    for m in range(1, 5):
        events, samples = traffic.minute(m)
        events += minute_of_execs(traffic.rng, 2.0, T0 + timedelta(minutes=m), newcomer, traffic.ids)
        stack.observe(events, samples)
    engine = engine_of(stack)
    assert len(engine.states) == 3
    assert all(
        (s.last_closed or 0) >= engine.window_of(T0 + timedelta(minutes=2)) for s in engine.states.values()
    )


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="learning_period"):
        WorkloadAnomalyConfig.model_validate({"learning_period": "PT1M"})
    with pytest.raises(ValueError, match="unknown"):
        WorkloadAnomalyConfig.model_validate({"unknown": 1})


# ------------------------------------------------------------------ Postgres: restart, reset


def detector_set() -> DetectorSet:
    names = set(DetectorSet.configure().names)
    return DetectorSet.configure({"workload_anomaly": CONFIG}, disabled=names - {"workload_anomaly"})


async def feed(pg: AsyncEngine, detectors: DetectorSet, traffic: Traffic, minutes: range) -> list[Finding]:
    """Through the same hooks the service uses: lookup, detect, persist, in one transaction a minute."""
    state: workload_anomaly.State = detectors.state_of("workload_anomaly")
    sessions = make_session_factory(pg)
    found: list[Finding] = []
    for m in minutes:
        events, samples = traffic.minute(m)
        async with sessions.begin() as session:
            await workload_anomaly.refresh(
                session, state, [*(e.workload for e in events), *(s.workload for s in samples)]
            )
            state.engine.add_samples(samples)
            found += workload_anomaly.detect(events, state)
            await detectors.persist(session)
    return found


async def test_a_restart_loses_no_baseline_and_no_model(pg: AsyncEngine) -> None:
    traffic = Traffic(n=6)
    first = detector_set()
    await feed(pg, first, traffic, range(0, 125))
    state: workload_anomaly.State = first.state_of("workload_anomaly")
    trainer = ModelTrainer(make_session_factory(pg), first, state)
    model = await trainer.fit_if_due()
    assert model is not None
    before = {k: s.baseline for k, s in state.engine.states.items()}
    assert all(b is not None for b in before.values())

    # a new process: nothing in memory, everything from Postgres
    second = detector_set()
    restarted: workload_anomaly.State = second.state_of("workload_anomaly")
    async with make_session_factory(pg).begin() as session:
        await workload_anomaly.refresh(session, restarted, traffic.workloads)
    engine = restarted.engine
    assert set(engine.states) == set(before)
    for key, baseline in before.items():
        assert baseline is not None
        loaded = engine.states[key].baseline
        assert loaded is not None
        assert np.allclose(loaded.mean, baseline.mean, equal_nan=True)
        assert np.allclose(loaded.q3, baseline.q3, equal_nan=True)
    assert engine.model is not None
    rows = np.random.default_rng(1).normal(size=(50, len(engine.names)))
    assert np.allclose(engine.model.forest.score_samples(rows), model.forest.score_samples(rows), atol=1e-12)
    # it carries on where the first left off: no relearning, and a burst is still found
    found = await feed(pg, second, traffic, range(125, 130))
    assert found == []
    assert all(s.ready for s in engine.states.values())


async def test_a_restart_still_waits_for_an_input_that_delivers_late(pg: AsyncEngine) -> None:
    """The Qualys poller's next batch comes after a restart: the new process knows how far each
    input had got (``analysis_input_clocks``) and keeps the windows open for it, as the old one
    would have."""

    def every_batch_a_checkpoint(detectors: DetectorSet) -> DetectorSet:
        state: workload_anomaly.State = detectors.state_of("workload_anomaly")
        state.config = state.config.model_copy(update={"checkpoint_every": timedelta(0)})
        return detectors

    async def deliver(detectors: DetectorSet, events: list[SecurityEvent]) -> None:
        state: workload_anomaly.State = detectors.state_of("workload_anomaly")
        async with make_session_factory(pg).begin() as session:
            await workload_anomaly.refresh(session, state, [e.workload for e in events])
            workload_anomaly.detect(events, state)
            await detectors.persist(session)

    traffic, other = Traffic(n=2), Traffic(n=2, seed=11)
    first = every_batch_a_checkpoint(detector_set())
    await feed(pg, first, traffic, range(0, 3))
    polled = [e for m in range(0, 3) for e in relabel(other.minute(m)[0], source="qualys")]
    assert polled
    await deliver(first, polled)
    second = every_batch_a_checkpoint(detector_set())  # a restart
    await feed(pg, second, traffic, range(3, 8))  # the live source runs five minutes ahead
    await deliver(second, [e for m in range(3, 8) for e in relabel(other.minute(m)[0], source="qualys")])
    engine = second.state_of("workload_anomaly").engine
    assert engine.late_events == 0
    assert {k[1] for k in engine.marks if k[0] == "events"} == {"tetragon", "qualys"}

    # marks stored far ahead (another pipeline's, a clock once wrong) hold nothing back and make
    # no live event late: the newest time is what this process has seen
    async with make_session_factory(pg).begin() as session:
        ahead = {key: when + timedelta(days=30) for key, when in engine.marks.items()}
        await input_clocks.save_marks(session, workload_anomaly.NAME, ahead)
    third = every_batch_a_checkpoint(detector_set())
    await feed(pg, third, traffic, range(8, 12))
    assert third.state_of("workload_anomaly").engine.late_events == 0


async def test_a_reset_makes_a_running_worker_learn_again(pg: AsyncEngine) -> None:
    traffic = Traffic(n=2)
    detectors = detector_set()
    await feed(pg, detectors, traffic, range(0, 125))
    state: workload_anomaly.State = detectors.state_of("workload_anomaly")
    key = next(iter(state.engine.states))
    async with make_session_factory(pg).begin() as session:
        assert await repo.reset(session, workload=key.split("@")[0]) == 1
    await feed(pg, detectors, traffic, range(125, 127))
    assert not state.engine.states[key].ready  # it reloaded the reset (missing) row and relearns
    assert sum(s.ready for s in state.engine.states.values()) == 1


async def test_a_concurrent_writer_fails_the_batch_instead_of_overwriting(pg: AsyncEngine) -> None:
    traffic = Traffic(n=1)
    one, two = detector_set(), detector_set()
    for detectors in (one, two):
        state: workload_anomaly.State = detectors.state_of("workload_anomaly")
        state.config = state.config.model_copy(update={"checkpoint_every": timedelta(0)})
    await feed(pg, one, traffic, range(0, 3))
    await feed(pg, two, traffic, range(3, 5))  # two loads and writes generation+1
    state = one.state_of("workload_anomaly")
    events, samples = traffic.minute(6)
    async with make_session_factory(pg).begin() as session:
        state.engine.add_samples(samples)
        workload_anomaly.detect(events, state)
        with pytest.raises(repo.ConcurrentUpdateError):
            await one.persist(session)


async def test_the_samples_handler_feeds_the_engine_once(pg: AsyncEngine) -> None:
    detectors = detector_set()
    handler = SamplesHandler(make_session_factory(pg), detectors, cluster_id="c1")
    traffic = Traffic(n=2)
    _, samples = traffic.minute(0)
    envelope = new_envelope(
        SAMPLES_RECEIVED,
        WorkloadSamples(source="json", samples=tuple(samples)),
        source="ingest",
        cluster_id="c1",
        occurred_at=T0,
    )
    await handler([Delivery("1-0", envelope, 1)])
    await handler([Delivery("1-0", envelope, 2)])  # redelivered: skipped
    engine = detectors.state_of("workload_anomaly").engine
    buckets = [b for s in engine.states.values() for b in s.buckets.values()]
    assert sum(sum(b.gauge_n.values()) for b in buckets) == 2


@pytest.fixture(autouse=True)
def _quiet_numpy() -> Iterator[None]:
    with np.errstate(all="ignore"):
        yield


async def test_the_profiles_api_shows_feature_baselines_and_reset_relearns(pg: AsyncEngine) -> None:
    traffic = Traffic(n=2)
    names = set(DetectorSet.configure().names)
    detectors = DetectorSet.configure(
        {"workload_anomaly": CONFIG, "behaviour_profile": {"learning_period": "PT2H"}},
        disabled=names - {"workload_anomaly", "behaviour_profile"},
    )
    state: workload_anomaly.State = detectors.state_of("workload_anomaly")
    sessions = make_session_factory(pg)
    for m in range(125):
        events, samples = traffic.minute(m)
        async with sessions.begin() as session:
            await workload_anomaly.refresh(session, state, [s.workload for s in samples])
            state.engine.add_samples(samples)
            await detectors.run(session, events)
            await detectors.persist(session)
    workload = traffic.workloads[0]
    key = "c1/ns0/Deployment/app0"
    async with sessions.begin() as session:
        row = await profiles.resolve(session, key)
        assert row is not None
        body = await profiles.read(session, row, 5)
    assert body.features is not None
    (baseline,) = body.features
    assert baseline["workload_key"] == key
    assert baseline["state"] == "ready"
    by_name = {f["feature"]: f for f in baseline["features"]}  # type: ignore[index]
    assert by_name["exec_count"]["mean"] == pytest.approx(traffic.rates[0], rel=0.35)
    assert by_name["cpu_cores"]["mean"] is not None
    async with sessions.begin() as session:
        row = await profiles.resolve(session, key)
        assert row is not None
        await profiles.reset(session, row)
    async with sessions.begin() as session:
        await workload_anomaly.refresh(session, state, [workload])
    assert all(k.split("@")[0] != key for k in state.engine.states)  # forgotten: it learns again


def test_windows_wait_for_the_slower_input_unless_it_stalled(stack: InMemoryStack) -> None:
    traffic = Traffic(n=2)
    engine = engine_of(stack)
    stack.observe(*traffic.minute(0))  # both inputs flowing
    minutes = [traffic.minute(m) for m in range(1, 5)]
    for events, _ in minutes:  # then the events stream runs ahead of the samples stream
        stack.observe(events)
    for _, samples in minutes:
        stack.observe(samples=samples)
    assert engine.late_events == 0
    assert engine.late_samples == 0
    closed = [s.last_closed for s in engine.states.values()]
    assert all(c is not None for c in closed)
    buckets = sum(sum(b.gauge_n.values()) for s in engine.states.values() for b in s.buckets.values())
    assert buckets > 0  # the latest samples wait in open windows, none was dropped as late
    # samples stop (a scraper down): after input_stall (10 min) the windows close on events alone
    before = max(c for c in closed if c is not None)
    for m in range(5, 17):
        stack.observe(traffic.minute(m)[0])
    after = max(s.last_closed for s in engine.states.values() if s.last_closed is not None)
    assert after >= before + 4


def relabel(events: list[SecurityEvent], **changes: Any) -> list[SecurityEvent]:
    """The same events from another input: another source, or a workload in another cluster."""
    out = []
    for event in events:
        source = changes.get("source", event.source)
        cluster = changes.get("cluster", event.workload.cluster)
        workload = event.workload.model_copy(update={"cluster": cluster})
        out.append(
            event.model_copy(
                update={"source": source, "workload": workload, "id": f"{source}-{cluster}-{event.id}"}
            )
        )
    return out


@pytest.mark.parametrize(
    "change",
    [{"source": "qualys"}, {"cluster": "c2"}],
    ids=["a source polled five minutes late", "a cluster forwarded five minutes late"],
)
def test_an_input_that_delivers_minutes_late_loses_no_events(
    stack: InMemoryStack, change: dict[str, str]
) -> None:
    """Live events from one input, and another input's events delivered five minutes after
    they happened, in a batch every five minutes (the Qualys poller's interval, a spoke that
    forwards in batches): windows wait for the slower input, none of its events is late."""
    traffic = Traffic(n=3)
    engine = engine_of(stack)
    other = Traffic(n=3, seed=11)
    stack.observe(*traffic.minute(0))
    stack.observe(relabel(other.minute(0)[0], **change))  # an input is waited for once it delivered
    held: list[SecurityEvent] = []
    delivered = 0
    for m in range(1, 31):
        stack.observe(*traffic.minute(m))
        held += relabel(other.minute(m)[0], **change)
        if m % 5 == 0:  # a batch of the last five minutes, as the poll or the forward arrives
            stack.observe(held)
            delivered += len(held)
            held = []
    assert delivered > 100
    assert engine.late_events == 0
    closed = [s.last_closed for s in engine.states.values()]
    assert all(c is not None for c in closed)  # windows did close meanwhile, at the slower pace


def test_an_input_that_stops_or_replays_a_backlog_holds_windows_for_input_stall_at_most(
    stack: InMemoryStack,
) -> None:
    traffic = Traffic(n=3)
    engine = engine_of(stack)
    other = Traffic(n=3, seed=11)
    for m in range(0, 5):
        stack.observe(*traffic.minute(m))
        stack.observe(relabel(other.minute(m)[0], source="qualys"))
    # qualys stops: for up to input_stall (10 min) the windows wait for it, then close without it
    for m in range(5, 20):
        stack.observe(*traffic.minute(m))
    watermark = engine.window_of(T0 + timedelta(minutes=19) - engine.config.input_stall)
    assert min(s.last_closed or 0 for s in engine.states.values()) >= watermark - 2
    assert {k[1] for k in engine.marks if k[0] == "events"} == {"tetragon"}  # the stopped one left
    # it comes back with a backlog from an hour ago: late, and it holds nothing
    before = engine.late_events
    stack.observe(relabel(other.minute(-60)[0], source="qualys"))
    stack.observe(*traffic.minute(20))
    assert engine.late_events > before
    assert max(s.last_closed or 0 for s in engine.states.values()) >= engine.window_of(
        T0 + timedelta(minutes=18)
    )
