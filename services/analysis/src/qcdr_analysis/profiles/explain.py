"""Findings of the profiler and of drift, each with its explanation.

An explanation says what was new, the baseline it was compared with (the top known behaviours
with their counts), the learning window, and the score with every adjustment that made it. It is
given twice: structured in ``attributes["explanation"]`` (for tools) and as text in
``explanation`` (for people). Built only when a finding is raised, so never on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.detectors import finding_id
from qcdr_analysis.profiles.profile import Profile

ANOMALY_DETECTOR = "behaviour_profile"
DRIFT_DETECTOR = "drift"


class _Counted(Protocol):
    @property
    def count(self) -> int: ...


@dataclass(slots=True)
class Score:
    base: int
    adjustments: list[tuple[str, int]] = field(default_factory=list)

    def adjust(self, reason: str, delta: int) -> None:
        if delta:
            self.adjustments.append((reason, delta))

    @property
    def value(self) -> int:
        return max(0, min(100, self.base + sum(delta for _, delta in self.adjustments)))

    def as_dict(self, threshold: int | None) -> dict[str, Any]:
        return {
            "value": self.value,
            "base": self.base,
            "adjustments": [{"reason": reason, "delta": delta} for reason, delta in self.adjustments],
            "threshold": threshold,
        }

    def text(self) -> str:
        parts = [f"base {self.base}"] + [f"{delta:+d} {reason}" for reason, delta in self.adjustments]
        return f"score {self.value}/100 ({'; '.join(parts)})"


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def top(entries: Mapping[Any, _Counted], n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent (value, count), most frequent first, ties by value."""
    ranked = sorted(entries.items(), key=lambda item: (-item[1].count, str(item[0])))
    return [(str(value), entry.count) for value, entry in ranked[:n]]


def listing(noun: str, items: Sequence[tuple[str, int]], total: int, unit: str) -> str:
    """``3 known processes: /usr/bin/python3 (1,204 execs), /bin/sh (12 execs)``."""
    if not total:
        return f"no known {noun}"
    shown = ", ".join(f"{value} ({count:,} {unit})" for value, count in items)
    more = f", and {total - len(items):,} more" if total > len(items) else ""
    return f"{total:,} known {noun}: {shown}{more}"


def baseline(noun: str, entries: Mapping[Any, _Counted], n: int, unit: str) -> tuple[dict[str, Any], str]:
    items = top(entries, n)
    structured = {
        "kind": noun,
        "known": len(entries),
        "top": [{"value": value, "count": count} for value, count in items],
    }
    return structured, listing(noun, items, len(entries), unit)


def learning_window(profile: Profile) -> tuple[dict[str, Any], str]:
    period = profile.learning_period or 0.0
    structured = {
        "first_seen": iso(profile.first_seen),
        "ready_at": iso(profile.ready_at if profile.first_seen is not None else None),
        "period_hours": round(period / 3600, 2),
        "events": profile.events,
        "overflow": dict(profile.overflow),
    }
    if profile.first_seen is None:
        text = "nothing learned yet: this is its first event"
    else:
        text = (
            f"learned over {period / 3600:g} h of event time "
            f"({structured['first_seen']} to {structured['ready_at']}, {profile.events:,} events)"
        )
    if profile.inherited is not None:
        # a rollout: most of the baseline was learned by the image this one replaced
        structured["inherited_from"] = profile.inherited.get("from")
        text += f", on top of the baseline of the image it replaced ({profile.inherited.get('from')})"
    if profile.overflow:
        text += f"; {sum(profile.overflow.values()):,} behaviours did not fit the profile's caps"
    return structured, text


@dataclass(slots=True)
class Context:
    """The event being scored and where it belongs."""

    event: SecurityEvent
    profile: Profile
    workload_key: str
    threshold: int
    top_n: int


def build(
    ctx: Context,
    *,
    drift: bool,
    category: str,
    value: str,
    severity: Severity,
    techniques: Sequence[str],
    title: str,
    new: dict[str, Any],
    compared: tuple[dict[str, Any], str] | None,
    score: Score,
    why: str,
) -> Finding:
    event, profile = ctx.event, ctx.profile
    detector = DRIFT_DETECTOR if drift else ANOMALY_DETECTOR
    window, window_text = learning_window(profile)
    learning = profile.learning(event.event_time.timestamp())
    sentences = [
        f"{why}.",
        f"Image profile {profile.key} is learning ({window_text})."
        if learning
        else f"Image profile {profile.key} {window_text}.",
    ]
    if compared is not None:
        sentences.append(f"Baseline: {compared[1]}.")
    sentences.append(f"S{score.text()[1:]}.")
    explanation = {
        "new": new,
        "baseline": compared[0] if compared is not None else None,
        "learning": window,
        "score": score.as_dict(None if drift else ctx.threshold),
        "why": why,
    }
    return Finding(
        id=finding_id(detector, (event,), f"{category}\x1f{value}"),
        kind=FindingKind.DRIFT if drift else FindingKind.ANOMALY,
        detector=detector,
        category=category,
        severity=severity,
        techniques=tuple(sorted(set(techniques))),
        title=title,
        explanation=" ".join(sentences),
        event_time=event.event_time,
        evidence_event_ids=(event.id,),
        workload=event.workload,
        process=event.process,
        network=event.network,
        source=event.source,
        attributes={
            "workload_key": ctx.workload_key,
            "profile_key": profile.key,
            "profile_state": "learning" if learning else "ready",
            "score": score.value,
            "value": value,
            "explanation": explanation,
        },
    )
