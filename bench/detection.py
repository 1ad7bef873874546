"""Detection quality: the detector stack over the simulated cluster, precision and recall per
anomaly type (issue #5; the method is in docs/DETECTION.md, the simulator in
tests/analysis/simulation).

    uv run python bench/detection.py                                # tuning seeds 11 and 12
    uv run python bench/detection.py --held-out                     # + seed 2027 (after tuning only)
    uv run python bench/detection.py --generate-only                # time the simulator alone
    uv run python bench/detection.py --held-out --write-doc docs/DETECTION.md

The corpus is read in place: ``$QCDR_SHARED_DIR`` or the ``shared/`` folder beside the checkout.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]

from tests.analysis.simulation import HELD_OUT_SEED, LEARNING, MONITORED, TUNING_SEEDS
from tests.analysis.simulation.evaluate import Evaluation, evaluate, other_findings, table
from tests.analysis.simulation.inject import TYPES
from tests.analysis.simulation.run import RunResult, real_stack, run
from tests.analysis.simulation.traffic import Scenario, ScenarioConfig

GOAL = 0.9
TIMING_HEADER = [
    "| seed | events | through the adapter | samples | findings | generation | detector stack |",
    "|---:|---:|---:|---:|---:|---:|---:|",
]


def measure(seed: int, generate_only: bool) -> tuple[RunResult, Evaluation]:
    scenario = Scenario(ScenarioConfig(seed=seed))
    result = run(scenario, None if generate_only else real_stack())
    return result, evaluate(seed, result.findings, scenario.instances)


def timing(seed: int, result: RunResult) -> str:
    return (
        f"| {seed} | {result.events:,} | {result.adapter_events:,} | {result.samples:,} "
        f"| {len(result.findings):,} | {result.generate_s:.1f} s | {result.stack_s:.1f} s |"
    )


def document(runs: list[tuple[int, RunResult, Evaluation]]) -> str:
    seeds = ", ".join(str(seed) for seed, _, _ in runs)
    held_out = any(seed == HELD_OUT_SEED for seed, _, _ in runs)
    goal_met = all(
        (s.recall or 0) >= GOAL and (s.precision or 0) >= GOAL
        for _, _, ev in runs
        for s in (ev.scores[k] for k in TYPES)
    )
    which = (
        f"{HELD_OUT_SEED} is the held-out seed"
        if held_out
        else "tuning seeds only; the held-out seed not yet run"
    )
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}; seeds {seeds} ({which}).",
        f"Learning {LEARNING.total_seconds() / 3600:.0f} h, monitored {MONITORED.total_seconds() / 3600:.0f} "
        f"h of event time. Goal: precision and recall ≥ {GOAL} per type — "
        f"{'met' if goal_met else 'NOT met'}.",
        "",
        table([ev for _, _, ev in runs]),
        "",
        "Findings of categories no type accepts (near an injection: same workload, inside an "
        "instance's window; unexplained: anywhere else, which normal traffic should never cause):",
        "",
        other_findings([ev for _, _, ev in runs]),
        "",
        *TIMING_HEADER,
        *(timing(seed, result) for seed, result, _ in runs),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=list(TUNING_SEEDS))
    parser.add_argument("--held-out", action="store_true", help=f"also run seed {HELD_OUT_SEED}")
    parser.add_argument("--generate-only", action="store_true", help="time the simulator, no detectors")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    seeds = [*args.seeds, *([HELD_OUT_SEED] if args.held_out else [])]
    runs = []
    for seed in seeds:
        result, evaluation = measure(seed, args.generate_only)
        runs.append((seed, result, evaluation))
        print(timing(seed, result), file=sys.stderr)
    if args.json:
        out: dict[str, Any] = {
            str(seed): {
                "events": result.events,
                "samples": result.samples,
                "generate_s": result.generate_s,
                "stack_s": result.stack_s,
                "types": {
                    k: {"recall": ev.scores[k].recall, "precision": ev.scores[k].precision} for k in TYPES
                },
            }
            for seed, result, ev in runs
        }
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    elif args.generate_only:
        print("\n".join(TIMING_HEADER + [timing(seed, result) for seed, result, _ in runs]))
    else:
        print(document(runs))
    if args.write_doc and not args.generate_only:
        update_section(args.write_doc, "detection", document(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
