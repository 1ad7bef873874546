"""Benchmark: the behaviour detectors of issue #5 beside the seed's published figures.

The seed (Go, Apple M4) published: AI Analyze 27 µs per feature vector, Isolation Forest score
5.7 µs, K-Means 1.6 ms. Ours, measured here on decoded events in one process:

- score one closed window (our unit of "analyze"): the engine's cost per workload-minute with
  every workload ready and the population models fitted, amortized over 200 workloads;
- Isolation Forest score per event at batch 1,000: the fitted trees as arrays, and sklearn;
- k-means fit on 10,000 × 12;
- drift / profile check per event (the behaviour profiler on known executions);
- the whole stack (profiler + anomaly engine) in events/s on dense traffic (200 workloads,
  ~150 events per workload-minute), and on the simulated cluster of docs/DETECTION.md.

Goals (issue #5): Isolation Forest ≤ 2 µs/event, stack ≥ 30,000 events/s in one worker.

    uv run python bench/anomaly.py [--json] [--write-doc docs/PERFORMANCE.md]
"""

# ruff: noqa: E501  (the markdown table rows are written as they appear in the document)

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from qcdr_analysis.anomaly.forest import ForestArrays
from qcdr_analysis.anomaly.stack import InMemoryStack
from qcdr_common.contracts.events.v1 import NetworkDestination, ProcessInfo, SecurityEvent, Workload
from qcdr_common.contracts.samples.v1 import WorkloadSample
from qcdr_ingest.events.adapters.tetragon import convert
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest

GOAL_FOREST_US = 2.0
GOAL_STACK_EPS = 30_000
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def best(fn: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def forest_figures() -> dict[str, float]:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(10_000, 12))
    model = IsolationForest(n_estimators=100, random_state=3).fit(train)
    arrays = ForestArrays.from_sklearn(model)
    batch = rng.normal(size=(1000, 12))
    one = batch[:1]
    return {
        "forest_arrays_us_per_event_b1000": best(lambda: arrays.score_samples(batch)) / 1000 * 1e6,
        "forest_sklearn_us_per_event_b1000": best(lambda: model.score_samples(batch)) / 1000 * 1e6,
        "forest_arrays_us_single": best(lambda: arrays.score_samples(one), 20) * 1e6,
        "forest_sklearn_us_single": best(lambda: model.score_samples(one), 5) * 1e6,
        "kmeans_fit_ms_10000x12": best(lambda: KMeans(8, n_init=1, random_state=0).fit(train), 3) * 1e3,
        "forest_fit_ms_10000x12": best(lambda: IsolationForest(n_estimators=100).fit(train), 3) * 1e3,
    }


def corpus() -> Path:
    env = os.environ.get("QCDR_SHARED_DIR")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return shared / "corpora" / "tetragon" / "docs" / "security-observability-with-ebpf" / "03_chapter"


class Dense:
    """200 workloads, ~150 events per workload-minute (execs of known binaries, connections to
    known peers), one resource sample a minute. Events are real Tetragon exports from the corpus
    (``nc_process_exec``, ``nc_process_connect``) converted by the ingest adapter, then copied with
    this workload, time, binary and peer: decoded events with their raw bodies, built before
    timing starts."""

    def __init__(self, workloads: int = 200, per_minute: int = 150, seed: int = 5) -> None:
        self.rng = np.random.default_rng(seed)
        self.per_minute = per_minute
        lifecycle = corpus() / "00_process_lifecycle"
        self.templates = [
            convert(orjson.loads((lifecycle / name).read_bytes()), "bench")
            for name in ("nc_process_exec.json", "nc_process_connect.json")
        ]
        self.workloads = [
            Workload(
                cluster="bench",
                namespace=f"ns{i % 20}",
                owner_kind="Deployment",
                owner_name=f"app{i}",
                pod=f"app{i}-5f7c9d-abcde",
                image_digest=f"sha256:{i:064x}",
            )
            for i in range(workloads)
        ]
        self.binaries = [ProcessInfo(path=f"/usr/bin/tool{k}", parent_path="/bin/sh") for k in range(6)]
        self.peers = [NetworkDestination(ip=f"10.96.{k}.{k + 10}", port=8080 + k) for k in range(6)]
        self.ids = 0

    def minute(self, m: int) -> tuple[list[SecurityEvent], list[WorkloadSample]]:
        events: list[SecurityEvent] = []
        samples = []
        offsets = self.rng.uniform(0, 60, size=(len(self.workloads), self.per_minute))
        kinds = self.rng.integers(0, 12, size=(len(self.workloads), self.per_minute))
        for i, workload in enumerate(self.workloads):
            for j in range(self.per_minute):
                self.ids += 1
                k = int(kinds[i, j])
                connect = k >= 6
                events.append(
                    self.templates[connect].model_copy(
                        update={
                            "id": f"b{self.ids}",
                            "event_time": T0 + timedelta(minutes=m, seconds=float(offsets[i, j])),
                            "workload": workload,
                            "process": self.binaries[k % 6],
                            "network": self.peers[k % 6] if connect else None,
                        }
                    )
                )
            samples.append(
                WorkloadSample.model_construct(
                    time=T0 + timedelta(minutes=m, seconds=30),
                    workload=workload,
                    values={"cpu_cores": 0.5 + 0.02 * float(self.rng.normal())},
                )
            )
        events.sort(key=lambda e: e.event_time)
        return events, samples


def stack_figures(minutes_learning: int = 20, minutes_ready: int = 10) -> dict[str, float]:
    config = {
        "behaviour_profile": {"learning_period": f"PT{minutes_learning}M"},
        "workload_anomaly": {"learning_period": f"PT{minutes_learning}M", "refit_every": "PT1H"},
    }
    stack = InMemoryStack.configure(config)
    dense = Dense()
    for m in range(minutes_learning + 2):
        events, samples = dense.minute(m)
        for start in range(0, len(events), 2000):
            stack.observe(events[start : start + 2000], samples if start == 0 else ())
    engine = stack.engine
    assert engine is not None
    ready = sum(s.ready for s in engine.states.values())
    prepared = [dense.minute(m) for m in range(minutes_learning + 2, minutes_learning + 2 + minutes_ready)]
    n_events = sum(len(e) for e, _ in prepared)
    gc.collect()
    gc.freeze()
    start = time.perf_counter()
    for events, samples in prepared:
        for offset in range(0, len(events), 2000):
            stack.observe(events[offset : offset + 2000], samples if offset == 0 else ())
    elapsed = time.perf_counter() - start
    # the cost of closing and scoring one window: advance a sample-only minute for every workload
    window_runs = []
    for m in range(minutes_learning + 2 + minutes_ready, minutes_learning + 2 + minutes_ready + 5):
        samples = [
            WorkloadSample.model_construct(
                time=T0 + timedelta(minutes=m, seconds=30), workload=w, values={"cpu_cores": 0.5}
            )
            for w in dense.workloads
        ]
        engine.add_samples(samples)
        # windows close when both the event and the sample clocks pass them; this minute has
        # samples only, so it is closed explicitly (counting what closed: a run that scores
        # nothing must not pass for a fast one)
        t = time.perf_counter()
        closed = engine.advance(T0 + timedelta(minutes=m + 1, seconds=1))
        window_runs.append((time.perf_counter() - t) / len(dense.workloads))
        this = engine.window_of(T0 + timedelta(minutes=m, seconds=30))
        behind = sum(1 for st in engine.states.values() if st.last_closed is None or st.last_closed < this)
        if behind:
            raise RuntimeError(f"minute {m}: {behind} workloads did not close their window")
        del closed
    gc.unfreeze()
    return {
        "stack_events_per_s_dense": n_events / elapsed,
        "stack_us_per_event_dense": elapsed / n_events * 1e6,
        "stack_ready_workloads": ready,
        "window_score_us": statistics.median(window_runs) * 1e6,
    }


def profile_check_figure() -> float:
    """µs per event of the behaviour profiler (drift and profile checks) on known behaviour, the
    hot path once a profile is ready (fresh copies each pass, so nothing is cached per object)."""
    stack = InMemoryStack.configure(
        {"behaviour_profile": {"learning_period": "PT5M"}}, only=("behaviour_profile",)
    )
    dense = Dense(workloads=50, per_minute=100)
    for m in range(7):
        stack.observe(dense.minute(m)[0])
    passes = [[e for m in range(7 + 5 * r, 12 + 5 * r) for e in dense.minute(m)[0]] for r in range(3)]
    elapsed = min(best(lambda batch=batch: stack.observe(batch), 1) for batch in passes)
    return elapsed / len(passes[0]) * 1e6


def simulated_figures() -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.analysis.simulation import TUNING_SEEDS
    from tests.analysis.simulation.run import real_stack, run
    from tests.analysis.simulation.traffic import Scenario, ScenarioConfig

    corpus = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tetragon"
    scenario = Scenario(ScenarioConfig(seed=TUNING_SEEDS[0]), corpus)
    result = run(scenario, real_stack())
    return {
        "sim_events": result.events,
        "sim_samples": result.samples,
        "sim_stack_s": result.stack_s,
        "sim_events_per_s": result.events / result.stack_s,
    }


def render(f: dict[str, Any]) -> str:
    ok = "met" if f["forest_arrays_us_per_event_b1000"] <= GOAL_FOREST_US else "**missed**"
    ok_stack = "met" if f["stack_events_per_s_dense"] >= GOAL_STACK_EPS else "**missed**"
    return f"""Machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}. `uv run python bench/anomaly.py`.

| operation | seed (Go, Apple M4) | qcdr (this machine) |
|---|---|---|
| analyze one feature vector / score one closed window | 27 µs | {f["window_score_us"]:.1f} µs per workload-window (200 ready workloads, forest + k-means + z/IQR + EWMA) |
| Isolation Forest score per event, batch 1,000 | 5.7 µs | {f["forest_arrays_us_per_event_b1000"]:.2f} µs (trees as arrays; sklearn {f["forest_sklearn_us_per_event_b1000"]:.2f} µs) — goal ≤ {GOAL_FOREST_US} µs: {ok} |
| Isolation Forest, one event alone | — | {f["forest_arrays_us_single"]:.0f} µs arrays, {f["forest_sklearn_us_single"]:.0f} µs sklearn |
| k-means fit, 10,000 × 12 (k=8, one init) | 1.6 ms (tiny input) | {f["kmeans_fit_ms_10000x12"]:.1f} ms |
| Isolation Forest fit, 10,000 × 12, 100 trees | — | {f["forest_fit_ms_10000x12"]:.0f} ms |
| drift + profile check per event (known behaviour) | — | {f["profile_check_us"]:.1f} µs |
| whole stack, dense traffic (200 workloads × 150 events/min) | — | {f["stack_events_per_s_dense"]:,.0f} events/s ({f["stack_us_per_event_dense"]:.1f} µs/event) — goal ≥ {GOAL_STACK_EPS:,}: {ok_stack} |
| whole stack, simulated cluster of DETECTION.md (seed 11, 32 h) | — | {f["sim_events"]:,} events + {f["sim_samples"]:,} samples in {f["sim_stack_s"]:.1f} s ({f["sim_events_per_s"]:,.0f} events/s) |

The simulated cluster is sparse (~1.25 events per workload-minute), so its cost is dominated by
closing and scoring one window per workload and minute rather than by events; the dense row is the
events/s figure the goal is about.

**Isolation Forest goal (≤ 2 µs/event) missed — what limits it.** The arrays walk every (row, tree)
pair at once, one depth level per step: 100 trees × 8 levels × ~7 numpy passes (gather the node's
column, the row's value, the threshold, compare, gather the child) over 51,200 elements per
512-row chunk. Timing each step of the walk (batch 512, 100 trees, 8 steps): the four gathers
take 91 % (child 29 %, row value 25 %, column 18 %, threshold 18 %), the comparison 4 %, the final
sum over trees 5 %, i.e. memory-bound gathers at ~1 ns per element; a padded heap layout (no child gather) and reused buffers gave no reliable
gain. A compiled kernel was measured (2026-12-06, numba 0.68, not adopted): one branchless walk
per row and tree, rows in blocks so that their walks overlap, gave 3.2 µs per event against 6.4 µs
for the arrays in the same run on a busy machine (half, so about 2 µs on a quiet one), and 11 µs
against 130 µs for one window alone. It would reach the goal, but costs a JIT compiler in the
analysis image (numba and llvmlite, ~50 MB), ~0.9 s of import and ~1.3 s of compilation in every
process (or a writable cache), for a part of the stack that is not its limit: the forest scores
*windows*, one per workload-minute, never events, so at 200 workloads it costs ~0.7 ms a minute.
Fewer trees would also do (50 trees halve it; the detection table does not depend on the
forest's vote alone).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-doc", type=Path)
    parser.add_argument("--skip-simulation", action="store_true")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    figures.update(forest_figures())
    figures["profile_check_us"] = profile_check_figure()
    figures.update(stack_figures())
    if args.skip_simulation:
        figures.update(sim_events=0, sim_samples=0, sim_stack_s=float("nan"), sim_events_per_s=float("nan"))
    else:
        figures.update(simulated_figures())
    if args.json:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(figures))
    if args.write_doc:
        update_section(args.write_doc, "anomaly", "## Behaviour detectors (issue #5)\n\n" + render(figures))


if __name__ == "__main__":
    main()
