"""Matching findings to injected instances, and the precision/recall table.

A finding matches an instance when it names the instance's workload
(``attributes["workload_key"]``), its category is accepted for the instance's type, and its event
time is in ``[start, end + 5 min]``.

* recall(type) = instances of the type matched by at least one finding / instances;
* precision(type) = TP / (TP + FP) over the findings whose category the type accepts: TP match an
  instance of the type, FP match no instance of any type. A finding explained by another type's
  instance (an ``anomaly.rate`` finding during a slow drift, for burst) is neither.
* Findings of categories no type accepts (``anomaly.unusual_parent``, ``drift.package_manager``,
  ...) are counted apart, as "near an injection" (same workload, within an instance's window) or
  "unexplained" (which normal traffic should never cause).
* Delay: from an instance's start to its first matching finding.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from qcdr_common.contracts.findings.v1 import Finding

from tests.analysis.simulation import TOLERANCE
from tests.analysis.simulation.inject import TYPES, Instance

ACCEPTED: dict[str, frozenset[str]] = {
    "new_binary": frozenset({"anomaly.unknown_process", "drift.new_executable"}),
    "new_destination": frozenset({"anomaly.unknown_destination"}),
    "burst": frozenset({"anomaly.rate"}),
    "slow_drift": frozenset({"anomaly.trend", "anomaly.rate"}),
}
ANY_ACCEPTED = frozenset().union(*ACCEPTED.values())


def workload_of(finding: Finding) -> str:
    value = finding.attributes.get("workload_key")
    return value if isinstance(value, str) else ""


def in_window(finding: Finding, instance: Instance) -> bool:
    return (
        workload_of(finding) == instance.workload_key
        and instance.start <= finding.event_time <= instance.end + TOLERANCE
    )


def matches(finding: Finding, instance: Instance) -> bool:
    return finding.category in ACCEPTED[instance.type] and in_window(finding, instance)


@dataclass
class TypeScore:
    type: str
    instances: int = 0
    detected: int = 0
    findings: int = 0  # findings of a category this type accepts
    tp: int = 0
    fp: int = 0
    delays: list[timedelta] = field(default_factory=list)  # per detected instance
    missed: list[Instance] = field(default_factory=list)
    false_positives: list[Finding] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.instances if self.instances else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def median_delay(self) -> timedelta | None:
        if not self.delays:
            return None
        return timedelta(seconds=statistics.median(d.total_seconds() for d in self.delays))

    @property
    def max_delay(self) -> timedelta | None:
        return max(self.delays) if self.delays else None


@dataclass
class Evaluation:
    seed: int
    scores: dict[str, TypeScore]
    other_near: Counter[str]  # category -> findings of no accepted category, near an injection
    other_unexplained: Counter[str]  # ... and far from any
    findings: int


class _Index:
    """Instances by workload key, so matching is a short scan per finding."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self.by_workload: dict[str, list[Instance]] = {}
        for instance in instances:
            self.by_workload.setdefault(instance.workload_key, []).append(instance)

    def near(self, finding: Finding) -> list[Instance]:
        return [i for i in self.by_workload.get(workload_of(finding), ()) if in_window(finding, i)]


def evaluate(seed: int, findings: Sequence[Finding], instances: Sequence[Instance]) -> Evaluation:
    index = _Index(instances)
    scores = {kind: TypeScore(kind) for kind in TYPES}
    first: dict[int, timedelta] = {}  # id(instance) -> earliest delay
    other_near: Counter[str] = Counter()
    other_unexplained: Counter[str] = Counter()
    for instance in instances:
        scores[instance.type].instances += 1
    for finding in findings:
        near = index.near(finding)
        if finding.category not in ANY_ACCEPTED:
            (other_near if near else other_unexplained)[finding.category] += 1
            continue
        matched = [i for i in near if finding.category in ACCEPTED[i.type]]
        for instance in matched:
            delay = finding.event_time - instance.start
            if id(instance) not in first or delay < first[id(instance)]:
                first[id(instance)] = delay
        for kind, accepted in ACCEPTED.items():
            if finding.category not in accepted:
                continue
            score = scores[kind]
            score.findings += 1
            if any(i.type == kind for i in matched):
                score.tp += 1
            elif not matched:
                score.fp += 1
                score.false_positives.append(finding)
    for instance in instances:
        score = scores[instance.type]
        if id(instance) in first:
            score.detected += 1
            score.delays.append(first[id(instance)])
        else:
            score.missed.append(instance)
    return Evaluation(seed, scores, other_near, other_unexplained, len(findings))


# ----------------------------------------------------------------------------- the table


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _delay(value: timedelta | None) -> str:
    if value is None:
        return "–"
    seconds = value.total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(evaluations: Sequence[Evaluation]) -> str:
    """Markdown: per seed and type, instances, detected, recall, findings, TP, FP, precision, delays."""
    lines = [
        "| seed | type | instances | detected | recall | findings | TP | FP | precision "
        "| median delay | max delay |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ev in evaluations:
        for kind in TYPES:
            s = ev.scores[kind]
            lines.append(
                f"| {ev.seed} | {kind} | {s.instances} | {s.detected} | {_ratio(s.recall)} | {s.findings} "
                f"| {s.tp} | {s.fp} | {_ratio(s.precision)} | {_delay(s.median_delay)} "
                f"| {_delay(s.max_delay)} |"
            )
    return "\n".join(lines)


def other_findings(evaluations: Sequence[Evaluation]) -> str:
    """Markdown: findings of categories no type accepts, per seed."""
    lines = ["| seed | category | near an injection | unexplained |", "|---:|---|---:|---:|"]
    for ev in evaluations:
        for category in sorted(set(ev.other_near) | set(ev.other_unexplained)):
            lines.append(
                f"| {ev.seed} | {category} | {ev.other_near[category]} | {ev.other_unexplained[category]} |"
            )
        if not ev.other_near and not ev.other_unexplained:
            lines.append(f"| {ev.seed} | (none) | 0 | 0 |")
    return "\n".join(lines)
