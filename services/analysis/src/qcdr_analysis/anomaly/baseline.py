"""A workload's baseline: learned while it is learning, frozen when it becomes ready.

Running moments (Welford) give mean and standard deviation of every feature's smoothed series
without keeping the series; a reservoir sample of smoothed vectors gives the quartiles for IQR and
the rows the population models train on; the lag-1 autocorrelation of each raw resource series
widens the EWMA control limits (resource levels are strongly autocorrelated, and a chart that
assumes independent samples alarms all day).
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# floors keep a constant series (a workload that never writes files) from dividing by zero and
# from turning its first event into an infinite z-score
COUNT_RATE_FLOOR = 0.1  # events per minute a Poisson standard deviation is computed from at least
GAUGE_RELATIVE_FLOOR = 0.01  # 1 % of the level
ABSOLUTE_FLOOR = 1e-9


@dataclass
class Moments:
    """Welford's running mean and variance per feature, NaN values skipped."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, size: int) -> Moments:
        return cls(np.zeros(size), np.zeros(size), np.zeros(size))

    def add(self, x: np.ndarray) -> None:
        ok = ~np.isnan(x)
        if not ok.any():
            return
        self.n[ok] += 1
        delta = x[ok] - self.mean[ok]
        self.mean[ok] += delta / self.n[ok]
        self.m2[ok] += delta * (x[ok] - self.mean[ok])

    @property
    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 1, np.sqrt(self.m2 / np.maximum(self.n - 1, 1)), np.nan)


@dataclass
class Lag1:
    """Running sums for the lag-1 autocorrelation of each raw gauge series."""

    n: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray
    prev: np.ndarray

    @classmethod
    def zeros(cls, size: int) -> Lag1:
        z = np.zeros(size)
        return cls(z.copy(), z.copy(), z.copy(), z.copy(), np.full(size, np.nan))

    def add(self, x: np.ndarray) -> None:
        pair = ~np.isnan(x) & ~np.isnan(self.prev)
        self.n[pair] += 1
        self.sx[pair] += x[pair]
        self.sxx[pair] += x[pair] * x[pair]
        self.sxy[pair] += x[pair] * self.prev[pair]
        self.prev = np.where(np.isnan(x), self.prev, x)

    def rho(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.sx / self.n
            var = self.sxx / self.n - mean * mean
            cov = self.sxy / self.n - mean * mean
            r = np.where((self.n > 10) & (var > 0), cov / var, 0.0)
        return np.asarray(np.clip(np.nan_to_num(r), 0.0, 0.98), dtype=float)


@dataclass
class Reservoir:
    """A uniform sample of at most ``capacity`` vectors of a stream (Vitter's algorithm R)."""

    capacity: int
    rows: list[np.ndarray] = field(default_factory=list)
    seen: int = 0

    def add(self, x: np.ndarray, rng: random.Random) -> None:
        self.seen += 1
        if len(self.rows) < self.capacity:
            self.rows.append(x.copy())
            return
        slot = rng.randrange(self.seen)
        if slot < self.capacity:
            self.rows[slot] = x.copy()

    def matrix(self, width: int) -> np.ndarray:
        return np.vstack(self.rows) if self.rows else np.empty((0, width))


@dataclass(frozen=True)
class Baseline:
    """The frozen statistics a ready workload is compared with (arrays over all features)."""

    windows: int
    mean: np.ndarray
    std: np.ndarray  # floored
    q1: np.ndarray
    q3: np.ndarray
    gauge_level: np.ndarray  # mean of the raw gauge series (EWMA centre), per gauge
    ewma_std: np.ndarray  # standard deviation of the EWMA statistic, per gauge

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "q1": self.q1.tolist(),
            "q3": self.q3.tolist(),
            "gauge_level": self.gauge_level.tolist(),
            "ewma_std": self.ewma_std.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        def arr(name: str) -> np.ndarray:
            return np.array(data[name], dtype=float)

        return cls(
            windows=int(data["windows"]),
            mean=arr("mean"),
            std=arr("std"),
            q1=arr("q1"),
            q3=arr("q3"),
            gauge_level=arr("gauge_level"),
            ewma_std=arr("ewma_std"),
        )


def freeze(
    smoothed: Moments,
    reservoir: Reservoir,
    raw_gauges: Moments,
    lag1: Lag1,
    *,
    n_counts: int,
    smoothing: int,
    ewma_lambda: float,
) -> Baseline:
    """The baseline from what learning gathered (features: ``n_counts`` counts, then gauges)."""
    width = smoothed.mean.size
    mean = np.where(smoothed.n > 0, smoothed.mean, np.nan)
    std = smoothed.std
    sample = reservoir.matrix(width)
    if sample.shape[0] >= 4:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no samples) is NaN
            q1 = np.nanpercentile(sample, 25, axis=0) if sample.size else np.full(width, np.nan)
            q3 = np.nanpercentile(sample, 75, axis=0) if sample.size else np.full(width, np.nan)
    else:
        q1 = q3 = np.full(width, np.nan)
    floor = np.empty(width)
    # counts: the standard deviation of a Poisson rate averaged over `smoothing` windows
    floor[:n_counts] = np.sqrt(np.maximum(np.nan_to_num(mean[:n_counts]), COUNT_RATE_FLOOR) / smoothing)
    floor[n_counts:] = np.maximum(
        np.abs(np.nan_to_num(mean[n_counts:])) * GAUGE_RELATIVE_FLOOR, ABSOLUTE_FLOOR
    )
    std = np.fmax(np.nan_to_num(std, nan=0.0), floor)
    # IQR at least one event in the smoothing span (counts) or 1 % of the level (gauges)
    min_iqr = np.concatenate([np.full(n_counts, 1.0 / smoothing), floor[n_counts:]])
    iqr = np.fmax(np.nan_to_num(q3 - q1, nan=0.0), min_iqr)
    centre = np.where(np.isnan(q1), mean, (q1 + q3) / 2)
    q1 = np.where(np.isnan(q1) | (q3 - q1 < min_iqr), centre - iqr / 2, q1)
    q3 = np.where(np.isnan(q3) | (q3 - q1 < min_iqr), centre + iqr / 2, q3)
    gauge_level = np.where(raw_gauges.n > 0, raw_gauges.mean, np.nan)
    raw_std = np.fmax(
        np.nan_to_num(raw_gauges.std, nan=0.0),
        np.maximum(np.abs(np.nan_to_num(gauge_level)) * GAUGE_RELATIVE_FLOOR, ABSOLUTE_FLOOR),
    )
    rho = lag1.rho()
    # EWMA variance for an AR(1) process: sigma^2 * lambda/(2-lambda) * (1+rho)/(1-rho)
    # (the usual large-t approximation when lambda is small relative to 1-rho)
    inflation = np.sqrt((1 + rho) / (1 - rho))
    ewma_std = raw_std * math.sqrt(ewma_lambda / (2 - ewma_lambda)) * inflation
    # the learned level is itself an estimate, and a poor one for an autocorrelated series: its
    # standard error widens the limit (n samples carry n (1-rho)/(1+rho) samples' information)
    level_se = raw_std * inflation / np.sqrt(np.maximum(raw_gauges.n, 1))
    ewma_std = np.sqrt(ewma_std**2 + level_se**2)
    return Baseline(
        windows=int(np.max(smoothed.n)) if smoothed.n.size else 0,
        mean=np.nan_to_num(mean, nan=0.0),
        std=std,
        q1=q1,
        q3=q3,
        gauge_level=gauge_level,
        ewma_std=ewma_std,
    )
