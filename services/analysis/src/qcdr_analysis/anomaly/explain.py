"""Findings of the workload anomaly engine, each with the explanation a person needs: which
features deviated, by how much, against which baseline, and which detectors agreed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from qcdr_analysis.anomaly import features as ft
from qcdr_analysis.anomaly.scoring import RateVerdict
from qcdr_analysis.anomaly.workload import Window, WorkloadState
from qcdr_analysis.detectors import finding_id
from qcdr_analysis.profiles.identity import profile_key, workload_key

if TYPE_CHECKING:
    from qcdr_analysis.anomaly.engine import WorkloadAnomalyEngine

DETECTOR = "workload_anomaly"


def _number(value: float) -> str:
    if value >= 1e6:
        return f"{value:.3g}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"


def _base(engine: WorkloadAnomalyEngine, state: WorkloadState, window: Window) -> dict[str, Any]:
    baseline = state.scoring_baseline
    first = state.learning_start(window.number)
    daily = None
    if baseline is not None and baseline.daily is not None:
        # which limits applied: the hour's for these features, the flat ones for the rest
        daily = {
            "hour_utc": engine.hour_and_day(window.number)[0],
            "features": [n for n, f in zip(engine.names, baseline.daily.features, strict=True) if f],
        }
    return {
        "workload_key": workload_key(state.workload),
        "profile_key": profile_key(state.workload),
        "baseline_key": state.key,
        "window_start": engine.window_end(window.number - 1).isoformat(),
        "window_end": engine.window_end(window.number).isoformat(),
        "smoothing_windows": engine.config.smoothing_windows,
        "baseline": {
            "windows": baseline.windows if baseline is not None else 0,
            "learned_from": engine.window_end(first - 1).isoformat(),
            "learned_until": engine.window_end(first + engine.learning_windows - 1).isoformat(),
            "daily_profile": daily,
            # a new image still learning is scored against the image it replaced
            "inherited_from": state.inherited_from if state.baseline is None else None,
        },
    }


def _techniques(features: list[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for feature in features:
        found.update(ft.FEATURE_TECHNIQUES.get(feature, ()))
    return tuple(sorted(found))


def rate_finding(
    engine: WorkloadAnomalyEngine,
    state: WorkloadState,
    window: Window,
    verdict: RateVerdict,
    *,
    forest_score: float,
    kmeans_distance: float,
) -> Finding:
    top = verdict.deviations[0]
    ratio = top.ratio
    severity = Severity.HIGH if ratio >= 10 or len(verdict.votes) >= 4 else Severity.MEDIUM
    owner = workload_key(state.workload)
    parts = [
        f"{d.feature} {_number(d.value)} against {_number(d.mean)} ± {_number(d.std)}"
        f" (z {d.z:.1f}, IQR {_number(d.q1)}-{_number(d.q3)})"
        for d in verdict.deviations[:4]
    ]
    model = engine.model
    attributes = _base(engine, state, window)
    attributes["explanation"] = {
        "deviations": [d.to_json() for d in verdict.deviations],
        "votes": verdict.votes,
        "isolation_forest": None
        if model is None
        else {"score": round(forest_score, 4), "threshold": round(model.forest_threshold, 4)},
        "kmeans": None
        if model is None
        else {"distance": round(kmeans_distance, 3), "threshold": round(model.kmeans_threshold, 3)},
    }
    evidence = tuple(event_id for _, event_id in window.evidence[-20:])
    return Finding(
        id=finding_id(DETECTOR, (), f"rate|{state.key}|{window.number}"),
        kind=FindingKind.ANOMALY,
        detector=DETECTOR,
        category="anomaly.rate",
        severity=severity,
        techniques=_techniques([d.feature for d in verdict.deviations]),
        title=f"Unusual activity in {owner}: {top.feature} {_number(top.value)} per minute-average, "
        f"{_number(ratio)}x its baseline",
        explanation=f"Over the {engine.config.smoothing_windows} windows to "
        f"{attributes['window_end']}: "
        + "; ".join(parts)
        + f". Detectors agreeing: {', '.join(verdict.votes)}.",
        event_time=engine.window_end(window.number),
        evidence_event_ids=evidence,
        workload=state.workload,
        source=window.evidence[0][0] if window.evidence else "samples",
        attributes=attributes,
    )


def trend_finding(engine: WorkloadAnomalyEngine, state: WorkloadState, window: Window, gauge: int) -> Finding:
    baseline = state.scoring_baseline
    assert baseline is not None
    name = engine.config.gauges[gauge]
    level = float(baseline.gauge_level[gauge])
    current = float(state.ewma[gauge])
    relative = (current - level) / level if level else float("inf")
    # the hour's limit: with a daily profile the chart follows the deseasonalised series
    hourly = baseline.at(engine.hour_and_day(window.number)[0])
    limit = float(hourly.ewma_std[gauge]) * engine.config.ewma_limit
    daily = baseline.daily
    deseasonalised = daily is not None and bool(daily.features[engine.n_counts + gauge])
    owner = workload_key(state.workload)
    attributes = _base(engine, state, window)
    attributes["explanation"] = {
        "feature": name,
        "ewma": round(current, 6),
        "baseline_level": round(level, 6),
        "relative_shift": round(relative, 4),
        "control_limit": round(limit, 6),
        "lambda": engine.config.ewma_lambda,
        "windows_beyond_limit": int(state.trend_run[gauge]),
        "deseasonalised": deseasonalised,
        "last_value": None
        if window.raw[engine.n_counts + gauge] != window.raw[engine.n_counts + gauge]
        else round(float(window.raw[engine.n_counts + gauge]), 6),
    }
    return Finding(
        id=finding_id(DETECTOR, (), f"trend|{state.key}|{name}|{window.number}"),
        kind=FindingKind.ANOMALY,
        detector=DETECTOR,
        category="anomaly.trend",
        severity=Severity.MEDIUM if relative >= 0.5 else Severity.LOW,
        techniques=ft.FEATURE_TECHNIQUES.get(name, ()),
        title=f"{name} of {owner} has drifted {relative:+.0%} from its learned level",
        explanation=f"The EWMA (lambda {engine.config.ewma_lambda}) of {name} is {_number(current)} "
        f"against a "
        f"learned level of {_number(level)}; it has stayed above the control limit "
        f"({engine.config.ewma_limit} sigma = {_number(limit)}) for {int(state.trend_run[gauge])} windows.",
        event_time=engine.window_end(window.number),
        evidence_event_ids=(),
        workload=state.workload,
        source="samples",
        attributes=attributes,
    )
