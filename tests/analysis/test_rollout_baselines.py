"""Rollouts and the workload anomaly engine: a new image of a Deployment learns its own baseline
(48 h by default) and is scored meanwhile against the baseline of the image it replaced, in
memory and across a restart (real Postgres), unless that image was last seen too long ago."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import numpy as np
from qcdr_analysis.anomaly import repository as repo
from qcdr_analysis.anomaly.engine import WorkloadAnomalyEngine, baseline_key
from qcdr_analysis.anomaly.workload import WorkloadState
from qcdr_analysis.detectors import workload_anomaly
from qcdr_analysis.findings.service import DetectorSet
from qcdr_analysis.profiles.identity import profile_key
from qcdr_common.contracts.events.v1 import SecurityEvent, Workload
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_session_factory
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.exec_traffic import minute_of_execs

T0 = datetime(2026, 5, 4, tzinfo=UTC)
CONFIG: dict[str, Any] = {"learning_period": "PT2H", "refit_every": "PT24H", "gauges": ["cpu_cores"]}


def api(version: int) -> Workload:
    return Workload(
        cluster="c1",
        namespace="shop",
        owner_kind="Deployment",
        owner_name="api",
        pod=f"api-{version}-x",
        image=f"registry.example/shop/api:{version}",
        image_digest=f"sha256:{version:064x}",
    )


# Two neighbours keep the event clock going while api has a quiet stretch.
OTHERS = [
    Workload(cluster="c1", namespace="shop", owner_kind="Deployment", owner_name=f"w{i}", pod=f"w{i}-x")
    for i in range(2)
]


class Traffic:
    """Four execs a minute (Poisson) for api at ``version`` and for each neighbour."""

    def __init__(self, seed: int = 3) -> None:
        self.rng = np.random.default_rng(seed)
        self.ids = count(1)

    def minute(self, m: int, version: int | None, burst: bool = False) -> list[SecurityEvent]:
        events = []
        workloads = [*OTHERS, *([api(version)] if version is not None else [])]
        for w in workloads:
            rate = 40.0 if burst and w.owner_name == "api" else 4.0
            events += minute_of_execs(self.rng, rate, T0 + timedelta(minutes=m), w, self.ids)
        events.sort(key=lambda e: e.event_time)
        return events


def run(
    engine: WorkloadAnomalyEngine, traffic: Traffic, minutes: range, version: int | None, **kw: Any
) -> list[Finding]:
    found: list[Finding] = []
    for m in minutes:
        found += engine.observe_events(traffic.minute(m, version, **kw))
    return found


def engine_with(**config: Any) -> WorkloadAnomalyEngine:
    from qcdr_analysis.anomaly.config import WorkloadAnomalyConfig

    return WorkloadAnomalyEngine(WorkloadAnomalyConfig.model_validate({**CONFIG, **config}))


def api_rates(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.category == "anomaly.rate" and "/api" in f.attributes["workload_key"]]


def rolled_out(**config: Any) -> tuple[WorkloadAnomalyEngine, Traffic]:
    """v1 learnt for 2 h and ran a while; v2 replaces it at minute 150."""
    engine, traffic = engine_with(**config), Traffic()
    assert run(engine, traffic, range(0, 150), 1) == []
    assert engine.states[baseline_key(api(1))].ready
    return engine, traffic


def test_a_new_image_is_scored_against_the_image_it_replaced() -> None:
    engine, traffic = rolled_out()
    quiet = run(engine, traffic, range(150, 170), 2)
    assert quiet == []  # same behaviour, other image: nothing to say
    v2 = engine.states[baseline_key(api(2))]
    assert not v2.ready
    assert v2.inherited_from == baseline_key(api(1))
    found = run(engine, traffic, range(170, 175), 2, burst=True) + run(engine, traffic, range(175, 190), 2)
    (finding,) = api_rates(found)
    assert finding.attributes["baseline_key"] == baseline_key(api(2))
    assert finding.attributes["baseline"]["inherited_from"] == baseline_key(api(1))
    assert finding.workload is not None
    assert finding.workload.image_digest == api(2).image_digest
    # once v2 has learnt its own (2 h after it appeared), the inherited baseline is gone
    run(engine, traffic, range(190, 275), 2)
    assert v2.ready
    assert v2.inherited is None
    assert v2.inherited_from is None


def test_without_inheritance_a_new_image_is_blind_while_it_learns() -> None:
    engine, traffic = rolled_out(inherit_on_rollout=False)
    found = run(engine, traffic, range(150, 175), 2, burst=True)
    assert api_rates(found) == []
    assert engine.states[baseline_key(api(2))].inherited is None


def test_an_image_last_seen_too_long_ago_passes_nothing_on() -> None:
    engine, traffic = rolled_out(inherit_max_age="PT1H")
    # api is gone for 90 minutes (scaled to zero), then comes back on v2
    run(engine, traffic, range(150, 240), None)
    run(engine, traffic, range(240, 250), 2)
    assert engine.states[baseline_key(api(2))].inherited is None


def test_inheritance_passes_along_a_chain_of_quick_rollouts() -> None:
    engine, traffic = rolled_out()
    run(engine, traffic, range(150, 160), 2)
    run(engine, traffic, range(160, 170), 3)  # v3 before v2 has learnt anything of its own
    v3 = engine.states[baseline_key(api(3))]
    assert v3.inherited_from == baseline_key(api(1))
    found = run(engine, traffic, range(170, 175), 3, burst=True) + run(engine, traffic, range(175, 190), 3)
    (finding,) = api_rates(found)
    assert finding.attributes["baseline"]["inherited_from"] == baseline_key(api(1))


def test_an_inherited_baseline_survives_a_checkpoint() -> None:
    engine, traffic = rolled_out()
    run(engine, traffic, range(150, 160), 2)
    v2 = engine.states[baseline_key(api(2))]
    restored = WorkloadState.from_json(v2.key, v2.to_json(), engine.config.reservoir_size, 1)
    assert restored.inherited is not None
    assert restored.inherited_from == baseline_key(api(1))
    assert v2.inherited is not None
    np.testing.assert_allclose(restored.inherited.mean, v2.inherited.mean)
    old = v2.to_json()
    del old["inherited"]  # saved before rollouts inherited
    assert WorkloadState.from_json(v2.key, old, engine.config.reservoir_size, 1).inherited is None


# ------------------------------------------------------------------ Postgres: a new process


def detector_set() -> DetectorSet:
    names = set(DetectorSet.configure().names)
    return DetectorSet.configure({"workload_anomaly": CONFIG}, disabled=names - {"workload_anomaly"})


async def feed(
    pg: AsyncEngine, detectors: DetectorSet, traffic: Traffic, minutes: range, version: int, **kw: Any
) -> list[Finding]:
    """Through the service's hooks: lookup, detect, persist, one transaction a minute."""
    state: workload_anomaly.State = detectors.state_of("workload_anomaly")
    sessions = make_session_factory(pg)
    found: list[Finding] = []
    for m in minutes:
        events = traffic.minute(m, version, **kw)
        async with sessions.begin() as session:
            await workload_anomaly.lookup(session, events, state)
            found += workload_anomaly.detect(events, state)
            await detectors.persist(session)
    return found


async def test_a_new_process_finds_the_previous_image_in_postgres(pg: AsyncEngine) -> None:
    traffic = Traffic()
    first = detector_set()
    await feed(pg, first, traffic, range(0, 150), 1)
    # the neighbours' baselines, written as recently, belong to other owners
    async with make_session_factory(pg).begin() as session:
        rows = await repo.latest_states(session, ["c1/shop/Deployment/api"], [], 16)
    assert [s.key for s in rows] == [baseline_key(api(1))]

    # the rollout reaches a restarted worker: nothing in memory, v1 only in Postgres
    second = detector_set()
    found = await feed(pg, second, traffic, range(150, 160), 2)
    assert found == []
    engine = second.state_of("workload_anomaly").engine
    v2 = engine.states[baseline_key(api(2))]
    assert v2.inherited_from == baseline_key(api(1))
    assert baseline_key(api(1)) not in engine.states  # read as a donor, not loaded as a workload

    # and a third process, mid-learning, keeps scoring v2 against v1's baseline
    third = detector_set()
    found = await feed(pg, third, traffic, range(160, 165), 2, burst=True)
    found += await feed(pg, third, traffic, range(165, 180), 2)
    (finding,) = api_rates(found)
    assert finding.attributes["baseline"]["inherited_from"] == baseline_key(api(1))
    # the profiles API says what the learning image is scored against
    async with make_session_factory(pg).begin() as session:
        (shown,) = await repo.feature_baselines(session, profile_key(api(2)))
    assert shown["state"] == "learning"
    assert shown["inherited_from"] == baseline_key(api(1))
