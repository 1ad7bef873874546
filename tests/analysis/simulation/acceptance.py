"""Issue #5's acceptance check for one seed: precision and recall ≥ 0.9 per anomaly type for the
real detector stack over the simulated cluster, and nothing raised far from an injection.

The test files call it one seed each, so ``--dist loadfile`` spreads the seeds over the workers."""

from __future__ import annotations

from pathlib import Path

from tests.analysis.simulation.evaluate import evaluate, other_findings, table
from tests.analysis.simulation.inject import TYPES
from tests.analysis.simulation.run import real_stack, run
from tests.analysis.simulation.traffic import Scenario, ScenarioConfig

GOAL = 0.9


def check_seed(seed: int, tetragon_corpus: Path) -> None:
    scenario = Scenario(ScenarioConfig(seed=seed), tetragon_corpus)
    result = run(scenario, real_stack())  # the real InMemoryStack, never a fake
    evaluation = evaluate(seed, result.findings, scenario.instances)
    report = (
        f"seed {seed}: {result.events} events ({result.adapter_events} through the adapter), "
        f"{result.samples} samples, {len(result.findings)} findings; generation {result.generate_s:.1f} s, "
        f"stack {result.stack_s:.1f} s\n{table([evaluation])}\n{other_findings([evaluation])}"
    )
    print(report)
    failures = []
    for kind in TYPES:
        score = evaluation.scores[kind]
        if score.recall is None or score.recall < GOAL:
            missed = ", ".join(f"{i.workload_key}@{i.start:%H:%M}" for i in score.missed[:5])
            failures.append(f"{kind}: recall {score.recall} (missed {missed})")
        if score.precision is None or score.precision < GOAL:
            wrong = ", ".join(
                f"{f.category}@{f.attributes.get('workload_key')}" for f in score.false_positives[:5]
            )
            failures.append(f"{kind}: precision {score.precision} (false positives {wrong})")
    # normal traffic must not raise findings of other categories (drift.package_manager, ...)
    if evaluation.other_unexplained:
        failures.append(f"findings far from any injection: {dict(evaluation.other_unexplained)}")
    assert not failures, "\n".join([*failures, report])
