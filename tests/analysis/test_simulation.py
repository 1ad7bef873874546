"""The workload simulator and the evaluator themselves (the acceptance is test_detection_quality).

Deterministic per seed, shapes valid (and what the ingest adapter makes of every line), the
injections where the plan says, and the matching rules on hand-made findings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from qcdr_analysis.profiles.identity import workload_key
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.contracts.samples.v1 import WorkloadSample
from qcdr_ingest.events.adapters.tetragon import convert

from tests.analysis.simulation import CLUSTER, HELD_OUT_SEED, LEARNING, START, TOLERANCE, TUNING_SEEDS
from tests.analysis.simulation.cluster import MIN_ITEM_RATE, build_cluster
from tests.analysis.simulation.evaluate import evaluate, other_findings, table
from tests.analysis.simulation.inject import GAP, TYPES, Instance, plan
from tests.analysis.simulation.run import run
from tests.analysis.simulation.traffic import Batch, Scenario, ScenarioConfig

pytestmark = pytest.mark.shared

SMALL = ScenarioConfig(
    seed=TUNING_SEEDS[0],
    workloads=40,
    namespaces=8,
    learning=timedelta(hours=1),
    monitored=timedelta(hours=3),
    per_type=4,
)


@pytest.fixture(scope="module")
def small(tetragon_corpus: Path) -> tuple[Scenario, list[Batch]]:
    scenario = Scenario(SMALL, tetragon_corpus)
    return scenario, list(scenario.batches(max_items=150))


def events_of(batches: Sequence[Batch]) -> list[SecurityEvent]:
    return [e for b in batches for e in b.events]


# ----------------------------------------------------------------------------- the cluster


def test_seeds_are_fixed() -> None:
    assert TUNING_SEEDS == (11, 12)
    assert HELD_OUT_SEED == 2027


def test_the_cluster_has_200_workloads_of_the_usual_kinds() -> None:
    cluster = build_cluster(11)
    specs = cluster.workloads
    assert len(specs) == 200
    assert len(cluster.namespaces()) == 20
    kinds = Counter(s.kind for s in specs)
    assert set(kinds) == {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
    assert kinds["Deployment"] > 100
    assert all(1 <= len(s.pods) <= 4 for s in specs)
    assert len({s.key for s in specs}) == 200
    patterns = {
        "Deployment": r"[a-z-]+-[bcdfghjklmnpqrstvwxz2456789]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}",
        "StatefulSet": r"[a-z-]+-\d",
        "DaemonSet": r"[a-z-]+-[bcdfghjklmnpqrstvwxz2456789]{5}",
        "Job": r"[a-z-]+-[bcdfghjklmnpqrstvwxz2456789]{5}",
        "CronJob": r"[a-z-]+-\d{8}-[bcdfghjklmnpqrstvwxz2456789]{5}",
    }
    for spec in specs:
        for pod in spec.pods:
            assert re.fullmatch(patterns[spec.kind], pod.name), pod.name
            assert pod.name.startswith(spec.name + "-")
    # some workloads share an image (and then its binaries) with another one
    by_digest = Counter(s.digest for s in specs)
    shared = [d for d, n in by_digest.items() if n > 1]
    assert shared
    for digest in shared:
        entry = {s.entrypoint for s in specs if s.digest == digest}
        assert len(entry) == 1
    assert spec.key == f"{CLUSTER}/{spec.namespace}/{spec.kind}/{spec.name}"


def test_every_normal_behaviour_is_frequent_enough_to_be_learned() -> None:
    for seed in TUNING_SEEDS:
        for spec in build_cluster(seed).workloads:
            for rate, weights in zip(
                spec.rates, (spec.chain_weights, spec.destination_weights, spec.file_weights), strict=True
            ):
                assert weights
                assert rate * min(weights) >= MIN_ITEM_RATE
                assert sum(weights) == pytest.approx(1.0)
            # 10.96.0.0/12 services, 10.244.0.0/16 pods, documentation ranges for external ones
            for ip, _ in spec.destinations:
                assert ip.startswith(("10.", "198.51.100.", "192.0.2."))


def test_the_cluster_makes_one_to_three_events_per_workload_and_minute() -> None:
    specs = build_cluster(11).workloads
    mean_chain = 1.5  # exec chains are one or two execs
    per_minute = sum(s.rates[0] * mean_chain + s.rates[1] + s.rates[2] for s in specs) / len(specs)
    assert 1.0 <= per_minute <= 3.0


def test_the_cluster_is_deterministic_per_seed() -> None:
    assert build_cluster(11) == build_cluster(11)
    assert build_cluster(11) != build_cluster(12)


# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("seed", TUNING_SEEDS)
def test_the_plan_injects_20_instances_per_type_after_learning(seed: int) -> None:
    cluster = build_cluster(seed)
    injections = plan(cluster)
    assert plan(cluster) == injections
    end = START + LEARNING + timedelta(hours=26)
    by_type = {kind: injections.of_type(kind) for kind in TYPES}
    for kind, instances in by_type.items():
        assert len(instances) == 20, kind
        assert len({i.workload for i in instances}) == 20, kind  # distinct workloads per type
        for instance in instances:
            assert START + LEARNING <= instance.start <= instance.end
            assert instance.end + TOLERANCE <= end + TOLERANCE
            if kind in ("new_binary", "new_destination"):
                assert instance.start == instance.end
    for drift in by_type["slow_drift"]:
        assert drift.end - drift.start == timedelta(hours=24)
        assert end - drift.end <= timedelta(minutes=5)
    drifting = {i.workload for i in by_type["slow_drift"]}
    others = [i for i in injections.instances if i.type != "slow_drift"]
    assert not drifting & {i.workload for i in others}
    for a in others:
        for b in others:
            if a is not b and a.workload == b.workload:
                gap = timedelta(microseconds=GAP)
                assert a.end + gap <= b.start or b.end + gap <= a.start
    for instance in by_type["new_binary"]:
        spec = cluster.workloads[instance.workload]
        assert instance.details["binary"] not in cluster.image_binaries(spec.digest)
    for instance in by_type["new_destination"]:
        spec = cluster.workloads[instance.workload]
        target = (instance.details["ip"], instance.details["port"])
        assert target not in cluster.image_destinations(spec.digest)


# ----------------------------------------------------------------------------- the traffic


def test_batches_are_in_event_time_order_and_small(small: tuple[Scenario, list[Batch]]) -> None:
    _scenario, batches = small
    assert all(0 < len(b) <= 150 for b in batches)
    times = [
        t for b in batches for t in sorted([e.event_time for e in b.events] + [s.time for s in b.samples])
    ]
    assert times == sorted(times)
    for b in batches:
        moments = [e.event_time for e in b.events] + [s.time for s in b.samples]
        assert max(moments) - min(moments) < timedelta(minutes=1)
    assert times[0] >= START
    assert times[-1] < START + SMALL.learning + SMALL.monitored


def test_one_sample_per_workload_and_minute(small: tuple[Scenario, list[Batch]]) -> None:
    _scenario, batches = small
    samples = [s for b in batches for s in b.samples]
    minutes = int((SMALL.learning + SMALL.monitored).total_seconds() // 60)
    assert len(samples) == SMALL.workloads * minutes
    per_workload = Counter(workload_key(s.workload) for s in samples)
    assert set(per_workload.values()) == {minutes}
    for sample in samples[:500]:
        assert WorkloadSample.model_validate(sample.model_dump()) == sample
        assert sample.workload.pod is None
        assert sample.workload.image_digest


def test_every_event_is_what_the_adapter_makes_of_its_line(small: tuple[Scenario, list[Batch]]) -> None:
    scenario, batches = small
    events = events_of(batches)
    assert len({e.id for e in events}) == len(events)
    for event in events:
        assert convert(event.raw, CLUSTER).model_dump() == event.model_dump()
    assert 0 < scenario.factory.converted < len(events)
    categories = Counter(e.category for e in events)
    assert set(categories) == {"process_exec", "process_kprobe"}
    hooks = Counter(
        e.raw["process_kprobe"]["function_name"] for e in events if e.category == "process_kprobe"
    )
    assert set(hooks) == {"tcp_connect", "security_file_permission"}


def test_events_name_their_workload_and_image(small: tuple[Scenario, list[Batch]]) -> None:
    scenario, batches = small
    keys = {spec.key: spec for spec in scenario.cluster.workloads}
    for event in events_of(batches)[:3000]:
        spec = keys[workload_key(event.workload)]
        assert event.workload.image_digest == spec.digest
        assert event.workload.pod in {p.name for p in spec.pods}


def test_the_traffic_is_deterministic_per_seed(tetragon_corpus: Path) -> None:
    def head(seed: int) -> list[str]:
        scenario = Scenario(replace(SMALL, seed=seed), tetragon_corpus)
        batches = scenario.batches()
        return [e.id for _ in range(30) for e in next(batches).events]

    assert head(11) == head(11)
    assert head(11) != head(12)


def test_injected_events_are_where_the_plan_says(small: tuple[Scenario, list[Batch]]) -> None:
    scenario, batches = small
    events = events_of(batches)
    for instance in scenario.plan.of_type("new_binary"):
        found = [
            e
            for e in events
            if workload_key(e.workload) == instance.workload_key
            and e.process is not None
            and e.process.path == instance.details["binary"]
        ]
        assert len(found) == instance.details["events"]
        assert min(e.event_time for e in found) == instance.start
    for instance in scenario.plan.of_type("new_destination"):
        found = [
            e
            for e in events
            if workload_key(e.workload) == instance.workload_key
            and e.network is not None
            and (str(e.network.ip), e.network.port) == (instance.details["ip"], instance.details["port"])
        ]
        assert len(found) == instance.details["events"]
        assert min(e.event_time for e in found) == instance.start


def test_bursts_multiply_the_rate_by_ten(small: tuple[Scenario, list[Batch]]) -> None:
    scenario, _ = small
    slots = scenario.slots
    expected = observed = 0.0
    for burst in scenario.plan.bursts:
        inside = (
            (slots.workload == burst.workload)
            & (slots.kind == burst.kind)
            & (slots.time_us >= burst.start_us)
            & (slots.time_us < burst.end_us)
        )
        observed += int(inside.sum())
        expected += 10 * scenario.cluster.workloads[burst.workload].rates[burst.kind] * 5
    assert scenario.plan.bursts
    assert observed == pytest.approx(expected, rel=0.3)


def test_slow_drifts_grow_three_percent_per_hour(small: tuple[Scenario, list[Batch]]) -> None:
    scenario, _ = small
    metrics = ("cpu_cores", "memory_bytes", "syscalls_per_second", "network_tx_bytes_per_second")
    ratios = []
    for drift in scenario.plan.drifts:
        series = scenario.values[:, drift.workload, metrics.index(drift.metric)]
        start, end = drift.start_us // 60_000_000, drift.end_us // 60_000_000
        hours = (end - start) / 60
        ratios.append(series[end - 30 : end].mean() / series[start - 30 : start].mean() / 1.03**hours)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05)


# ----------------------------------------------------------------------------- the evaluator


def finding(category: str, workload: str, at: timedelta, n: int = 0) -> Finding:
    kind = FindingKind.DRIFT if category.startswith("drift.") else FindingKind.ANOMALY
    return Finding(
        id=f"f-{category}-{workload}-{at.total_seconds()}-{n}",
        kind=kind,
        detector="test",
        category=category,
        severity=Severity.HIGH,
        event_time=START + at,
        attributes={"workload_key": workload},
    )


def test_the_evaluator_counts_true_and_false_positives_by_the_rules() -> None:
    t1, t2, t3 = timedelta(hours=7), timedelta(hours=8), timedelta(hours=8, minutes=3)
    instances = [
        Instance("new_binary", "A", 0, START + t1, START + t1),
        Instance("burst", "B", 1, START + t2, START + t2 + timedelta(minutes=5)),
        Instance("slow_drift", "C", 2, START + t3, START + t3 + timedelta(hours=24)),
    ]
    findings = [
        finding("anomaly.unknown_process", "A", t1 + timedelta(seconds=10)),  # TP new_binary
        finding("drift.new_executable", "A", t1 + timedelta(minutes=6)),  # too late: FP
        finding("anomaly.unknown_process", "B", t1),  # wrong workload: FP
        finding("anomaly.rate", "B", t2 + timedelta(minutes=10)),  # TP burst (end + 5 min exactly)
        finding("anomaly.rate", "C", t3 + timedelta(hours=3)),  # TP drift, neither for burst
        finding("anomaly.rate", "B", t2 - timedelta(microseconds=1)),  # before the start: FP (both)
        finding("anomaly.unusual_parent", "A", t1),  # another category, near an injection
        finding("drift.package_manager", "D", t1),  # another category, unexplained
    ]
    ev = evaluate(11, findings, instances)
    nb, burst, drift, dest = (ev.scores[k] for k in ("new_binary", "burst", "slow_drift", "new_destination"))
    assert (nb.instances, nb.detected, nb.findings, nb.tp, nb.fp) == (1, 1, 3, 1, 2)
    assert nb.precision == pytest.approx(1 / 3)
    assert nb.recall == 1.0
    assert nb.median_delay == timedelta(seconds=10)
    assert (burst.instances, burst.detected, burst.findings, burst.tp, burst.fp) == (1, 1, 3, 1, 1)
    assert burst.max_delay == timedelta(minutes=10)
    # the burst's finding is explained by the burst: neither TP nor FP for the drift
    assert (drift.instances, drift.detected, drift.findings, drift.tp, drift.fp) == (1, 1, 3, 1, 1)
    assert dest.recall is None
    assert dest.precision is None
    assert ev.other_near == Counter({"anomaly.unusual_parent": 1})
    assert ev.other_unexplained == Counter({"drift.package_manager": 1})
    text = table([ev])
    assert "| 11 | new_binary | 1 | 1 | 1.000 | 3 | 1 | 2 | 0.333 | 10 s | 10 s |" in text
    assert "| 11 | new_destination | 0 | 0 | – |" in text
    assert "drift.package_manager | 0 | 1 |" in other_findings([ev])


def test_an_undetected_instance_is_a_miss() -> None:
    instances = [Instance("new_destination", "A", 0, START, START)]
    ev = evaluate(
        12, [finding("anomaly.unknown_destination", "A", TOLERANCE + timedelta(seconds=1))], instances
    )
    score = ev.scores["new_destination"]
    assert (score.detected, score.tp, score.fp, score.recall) == (0, 0, 1, 0.0)
    assert score.missed == instances


# ----------------------------------------------------------------------------- run.py with a fake


class FakeStack:
    """Flags what was injected, from the ground truth: execs and connections outside the image's
    normal behaviour (read from the events as the adapter made them), rate and trend instances a
    minute after they start. Only for testing run() and evaluate(): never in the acceptance."""

    def __init__(self, scenario: Scenario) -> None:
        cluster = scenario.cluster
        self.binaries = {s.key: cluster.image_binaries(s.digest) for s in cluster.workloads}
        self.destinations = {s.key: cluster.image_destinations(s.digest) for s in cluster.workloads}
        self.pending = sorted(
            (i for i in scenario.instances if i.type in ("burst", "slow_drift")), key=lambda i: i.start
        )
        self.samples = 0

    def observe(self, *, events: Sequence[SecurityEvent], samples: Sequence[WorkloadSample]) -> list[Finding]:
        out: list[Finding] = []
        self.samples += len(samples)
        for event in events:
            key = workload_key(event.workload)
            if (
                event.category == "process_exec"
                and event.process
                and event.process.path not in self.binaries[key]
            ):
                out.append(finding("anomaly.unknown_process", key, event.event_time - START, len(out)))
            network = event.network
            if network is not None and (str(network.ip), network.port) not in self.destinations[key]:
                out.append(finding("anomaly.unknown_destination", key, event.event_time - START, len(out)))
        now = max([e.event_time for e in events] + [s.time for s in samples])
        while self.pending and self.pending[0].start + timedelta(minutes=1) <= now:
            instance = self.pending.pop(0)
            category = "anomaly.rate" if instance.type == "burst" else "anomaly.trend"
            out.append(finding(category, instance.workload_key, now - START))
        return out

    def finish(self) -> list[Finding]:
        return []


def test_run_feeds_every_batch_and_the_fake_scores_perfectly(tetragon_corpus: Path) -> None:
    scenario = Scenario(SMALL, tetragon_corpus)
    stack = FakeStack(scenario)
    result = run(scenario, stack, max_items=500)
    assert result.samples == stack.samples == SMALL.workloads * 240
    assert result.events > 5000
    assert result.batches >= 240
    assert 0 < result.adapter_events < result.events
    ev = evaluate(SMALL.seed, result.findings, scenario.instances)
    for kind in TYPES:
        score = ev.scores[kind]
        assert score.instances == SMALL.per_type, kind
        assert (score.recall, score.precision) == (1.0, 1.0), kind
    assert not ev.other_near
    assert not ev.other_unexplained
