"""Normal traffic, the injections in it, and the resource samples, in event-time order.

Events: for each workload and each kind (exec chain, connection, file write) a Poisson process
of the workload's rate over the whole scenario (times uniform, count Poisson), items drawn with the
workload's Zipf weights, pods uniformly; bursts add 9× the rate of their kind for 5 minutes, with
the same items. Everything is drawn with numpy into flat arrays first; events are built from them
lazily, one batch at a time, so a seed never holds its 400,000 events in memory at once.

Samples: one per workload every 60 s of event time (at a fixed per-workload offset in the minute,
as a scraper's would be), for ``cpu_cores``, ``memory_bytes``, ``syscalls_per_second`` and
``network_tx_bytes_per_second``: level × (1 + ε), ε an AR(1) process (φ 0.6-0.9) with a stationary
relative sd of 5-15 % (2-6 % for memory). No daily cycle: the test learns for 6 h, in which a daily
cycle could not be learned. A drifting metric is multiplied by 1.03^(hours since its start).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.samples.v1 import WorkloadSample

from tests.analysis.simulation import LEARNING, MONITORED, START
from tests.analysis.simulation.cluster import METRICS, Cluster, build_cluster
from tests.analysis.simulation.events import EventFactory, Templates, corpus_dir
from tests.analysis.simulation.inject import (
    BURST_FACTOR,
    DRIFT_PER_HOUR,
    HOUR,
    MINUTE,
    US,
    Instance,
    Plan,
    plan,
)

EXEC, CONNECT, WRITE = 0, 1, 2
MAX_ITEMS = 2000  # per micro-batch (events + samples)


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int
    workloads: int = 200
    namespaces: int = 20
    learning: timedelta = LEARNING
    monitored: timedelta = MONITORED
    per_type: int = 20


@dataclass
class Batch:
    events: list[SecurityEvent] = field(default_factory=list)
    samples: list[WorkloadSample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.samples)


@dataclass(frozen=True)
class Slots:
    """One row per normal (or burst) exec chain, connection or file write, sorted by time."""

    time_us: np.ndarray
    workload: np.ndarray
    kind: np.ndarray
    item: np.ndarray
    pod: np.ndarray

    def __len__(self) -> int:
        return len(self.time_us)


def draw_slots(cluster: Cluster, injections: Plan, duration_us: int, rng: np.random.Generator) -> Slots:
    parts: list[tuple[np.ndarray, ...]] = []

    def add(w: int, kind: int, rate: float, start: int, end: int) -> None:
        spec = cluster.workloads[w]
        weights = (spec.chain_weights, spec.destination_weights, spec.file_weights)[kind]
        n = int(rng.poisson(rate * (end - start) / MINUTE))
        if n == 0 or not weights:
            return
        times = rng.integers(start, end, n, dtype=np.int64)
        items = rng.choice(len(weights), n, p=np.asarray(weights))
        pods = rng.integers(0, len(spec.pods), n)
        parts.append((times, np.full(n, w), np.full(n, kind), items, pods))

    for spec in cluster.workloads:
        for kind in (EXEC, CONNECT, WRITE):
            add(spec.index, kind, spec.rates[kind], 0, duration_us)
    for burst in injections.bursts:
        extra = (BURST_FACTOR - 1) * cluster.workloads[burst.workload].rates[burst.kind]
        add(burst.workload, burst.kind, extra, burst.start_us, burst.end_us)
    columns = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    order = np.argsort(columns[0], kind="stable")
    return Slots(*(c[order] for c in columns))


def draw_samples(cluster: Cluster, injections: Plan, minutes: int, rng: np.random.Generator) -> np.ndarray:
    """values[minute, workload, metric]: AR(1) noise around each workload's level, drifts applied."""
    n, m = len(cluster.workloads), len(METRICS)
    level = np.array([[spec.levels[x] for x in METRICS] for spec in cluster.workloads])
    sd = np.array([[spec.noise[x][0] for x in METRICS] for spec in cluster.workloads])
    phi = np.array([[spec.noise[x][1] for x in METRICS] for spec in cluster.workloads])
    shocks = rng.standard_normal((minutes, n, m)) * sd * np.sqrt(1 - phi**2)
    eps = np.empty((minutes, n, m))
    eps[0] = rng.standard_normal((n, m)) * sd  # start in the stationary distribution
    for t in range(1, minutes):
        eps[t] = phi * eps[t - 1] + shocks[t]
    values = level * np.maximum(0.05, 1 + eps)
    minute_us = np.arange(minutes, dtype=np.int64) * MINUTE
    for drift in injections.drifts:
        hours = np.clip(minute_us - drift.start_us, 0, drift.end_us - drift.start_us) / HOUR
        values[:, drift.workload, METRICS.index(drift.metric)] *= (1 + DRIFT_PER_HOUR) ** hours
    return values


class Scenario:
    """One seed: the cluster, the ground truth, and its traffic as micro-batches."""

    def __init__(self, config: ScenarioConfig, corpus: Path | None = None) -> None:
        self.config = config
        self.cluster = build_cluster(config.seed, config.workloads, config.namespaces)
        self.plan = plan(self.cluster, config.per_type, config.learning, config.monitored)
        self.duration_us = int((config.learning + config.monitored).total_seconds() * US)
        self.minutes = self.duration_us // MINUTE
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3]))
        self.slots = draw_slots(self.cluster, self.plan, self.duration_us, rng)
        self.values = draw_samples(self.cluster, self.plan, self.minutes, rng)
        self.offsets = rng.integers(0, MINUTE, len(self.cluster.workloads))
        self.factory = EventFactory(Templates(corpus or corpus_dir()), self.cluster)
        self._workloads = [spec.workload for spec in self.cluster.workloads]
        self._offsets: list[int] = self.offsets.tolist()

    @property
    def instances(self) -> list[Instance]:
        return self.plan.instances

    def _slot_events(self, us: int, w: int, kind: int, item: int, p: int) -> list[tuple[int, SecurityEvent]]:
        f = self.factory
        if kind == EXEC:
            lines = f.exec_lines(w, p, item, us)
            return [
                (us + 3000 * n, f.event((EXEC, w, p, item, n), line, us + 3000 * n))
                for n, line in enumerate(lines)
            ]
        spec = self.cluster.workloads[w]
        if kind == CONNECT:
            ip, port = spec.destinations[item]
            return [(us, f.event((CONNECT, w, p, item), f.connect_line(w, p, ip, port, us), us))]
        return [(us, f.event((WRITE, w, p, item), f.write_line(w, p, spec.files[item], us), us))]

    def _samples(self, minute: int) -> list[tuple[int, WorkloadSample]]:
        base = minute * MINUTE
        out = []
        construct = WorkloadSample.model_construct
        rows: list[list[float]] = self.values[minute].tolist()
        for workload, offset, row in zip(self._workloads, self._offsets, rows, strict=True):
            us = base + offset
            values = dict(zip(METRICS, row, strict=True))
            moment = START + timedelta(microseconds=us)
            out.append((us, construct(time=moment, workload=workload, values=values)))
        return out

    def batches(self, max_items: int = MAX_ITEMS) -> Iterator[Batch]:
        """Events and samples in event-time order, a minute of event time (at most ``max_items``)
        per batch; the injected lines go through the adapter."""
        times = self.slots.time_us
        execs, connects = self.plan.execs, self.plan.connects
        ie = ic = 0
        f = self.factory
        for minute in range(self.minutes):
            lo, hi = minute * MINUTE, (minute + 1) * MINUTE
            a, b = (int(x) for x in np.searchsorted(times, [lo, hi]))
            timeline: list[tuple[int, int, Any]] = []
            s = self.slots
            columns = (s.time_us[a:b], s.workload[a:b], s.kind[a:b], s.item[a:b], s.pod[a:b])
            for us, w, kind, item, p in zip(*(c.tolist() for c in columns), strict=True):
                timeline.extend((t, 0, event) for t, event in self._slot_events(us, w, kind, item, p))
            while ie < len(execs) and execs[ie].time_us < hi:
                x = execs[ie]
                line = f.injected_exec_line(x.workload, x.pod, x.binary, x.arguments, x.time_us)
                timeline.append((x.time_us, 0, f.convert(line)))
                ie += 1
            while ic < len(connects) and connects[ic].time_us < hi:
                c = connects[ic]
                line = f.connect_line(c.workload, c.pod, c.ip, c.port, c.time_us)
                timeline.append((c.time_us, 0, f.convert(line)))
                ic += 1
            timeline.extend((us, 1, sample) for us, sample in self._samples(minute))
            timeline.sort(key=lambda row: row[0])
            for start in range(0, len(timeline), max_items):
                batch = Batch()
                for _, is_sample, item in timeline[start : start + max_items]:
                    (batch.samples if is_sample else batch.events).append(item)
                yield batch
