"""Scoring closed windows: univariate tests per feature, population votes, and the explanation.

A finding needs agreement (``min_votes`` of z-score, IQR, Isolation Forest and k-means) *and* an
effect that matters (a count six times its usual rate and 2.5 more events a minute; a resource
level that doubles). Statistical significance alone is cheap in a cluster: 200 workloads produce
288,000 one-minute windows a day, and a 3-sigma test on each would alert hundreds of times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qcdr_analysis.anomaly.baseline import Baseline
from qcdr_analysis.anomaly.config import WorkloadAnomalyConfig


@dataclass
class Deviation:
    feature: str
    value: float
    mean: float
    std: float
    q1: float
    q3: float
    z: float
    methods: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.value / self.mean if self.mean > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": round(self.value, 6),
            "baseline_mean": round(self.mean, 6),
            "baseline_std": round(self.std, 6),
            "baseline_q1": round(self.q1, 6),
            "baseline_q3": round(self.q3, 6),
            "z": round(self.z, 2),
            "ratio": None if self.mean <= 0 else round(self.ratio, 2),
            "methods": self.methods,
        }


@dataclass
class RateVerdict:
    votes: list[str]
    deviations: list[Deviation]  # features with an effect that matters, largest z first


def rate_verdict(
    smoothed: np.ndarray,
    baseline: Baseline,
    names: tuple[str, ...],
    n_counts: int,
    config: WorkloadAnomalyConfig,
    forest_flag: bool,
    kmeans_flag: bool,
) -> RateVerdict:
    with np.errstate(invalid="ignore"):
        z = (smoothed - baseline.mean) / baseline.std
        spread = baseline.q3 - baseline.q1
        above_iqr = smoothed > baseline.q3 + config.iqr_multiplier * spread
        effect = np.zeros(smoothed.size, dtype=bool)
        excess = smoothed - baseline.mean
        effect[:n_counts] = (smoothed[:n_counts] >= baseline.mean[:n_counts] * config.count_min_ratio) & (
            excess[:n_counts] >= config.count_min_excess
        )
        level = np.abs(baseline.mean[n_counts:])
        effect[n_counts:] = (level > 0) & (excess[n_counts:] >= level * config.gauge_min_relative)
    valid = ~np.isnan(smoothed)
    z_flag = valid & (z > config.zscore_threshold) & effect
    iqr_flag = valid & above_iqr & effect
    votes = []
    if z_flag.any():
        votes.append("zscore")
    if iqr_flag.any():
        votes.append("iqr")
    if forest_flag:
        votes.append("isolation_forest")
    if kmeans_flag:
        votes.append("kmeans")
    deviations = []
    for i in np.flatnonzero(valid & effect & (z_flag | iqr_flag)):
        methods = [m for m, flag in (("zscore", z_flag[i]), ("iqr", iqr_flag[i])) if flag]
        deviations.append(
            Deviation(
                names[i],
                float(smoothed[i]),
                float(baseline.mean[i]),
                float(baseline.std[i]),
                float(baseline.q1[i]),
                float(baseline.q3[i]),
                float(z[i]),
                methods,
            )
        )
    deviations.sort(key=lambda d: -d.z)
    return RateVerdict(votes, deviations)


def trend_step(
    ewma: np.ndarray,
    raw_gauges: np.ndarray,
    baseline: Baseline,
    config: WorkloadAnomalyConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The EWMA after this window, and which gauges are beyond both limits (upward shifts)."""
    lam = config.ewma_lambda
    present = ~np.isnan(raw_gauges)
    start = np.where(np.isnan(ewma), baseline.gauge_level, ewma)
    updated = np.where(present, lam * raw_gauges + (1 - lam) * start, start)
    with np.errstate(invalid="ignore"):
        shift = updated - baseline.gauge_level
        beyond = (
            present
            & ~np.isnan(baseline.gauge_level)
            & (shift > config.ewma_limit * baseline.ewma_std)
            & (shift > config.trend_min_relative * np.abs(baseline.gauge_level))
        )
    return updated, beyond
