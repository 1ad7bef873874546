"""Daily profiles: a baseline per hour of day for workloads whose activity follows the clock.

A flat baseline learnt over a workload with a working-day cycle (busy from 08:00, quiet at night)
is the average of both: a night-time burst at the daytime level passes as normal, and the limits
are wide enough to hide most of what happens at night. Learning therefore also keeps running
moments per hour of day (UTC), separately for even and odd days. A feature is *seasonal* when
both halves cover every hour and their 24 hourly means agree (Pearson correlation at or above
``min_correlation``): a cycle that repeats from one day to the next, which noise does not (for a
flat workload two noisy 24-point profiles correlate at 0.8 about once in a million). Only seasonal
features are scored against their hour; the others keep the flat baseline.

An hour's limits: its mean, the standard deviation of its windows over the learning days (day-to-
day variation included), and quartiles from the reservoir's rows standardised by their own hour,
so the IQR test sees the spread within an hour, not the size of the cycle. Floors are those of the
flat baseline (baseline.py), computed from the hour's own level. A window is then judged by the
widest limits of its hour and the two next to it (``Baseline.at``): a day that starts 40 minutes
early is not a burst, while a quiet hour among quiet hours keeps its own tight limits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

HOURS = 24
SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400

Seasonality = Literal["off", "daily", "auto"]


def hour_and_day(window_start_s: float) -> tuple[int, int]:
    """Hour of day (UTC) and day number of a window starting ``window_start_s`` after the epoch."""
    return int(window_start_s // SECONDS_PER_HOUR) % HOURS, int(window_start_s // SECONDS_PER_DAY)


@dataclass(frozen=True)
class SeasonalRule:
    """How learning decides whether a workload gets hourly baselines."""

    mode: Seasonality = "auto"
    min_correlation: float = 0.8  # auto: agreement of the even-day and odd-day profiles
    min_hour_windows: int = 2  # windows an hour needs in each half (auto) or in all (daily)


@dataclass
class HourlyMoments:
    """Welford moments per (day parity, hour of day) and feature: arrays of shape (2, 24, width)."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, width: int) -> HourlyMoments:
        shape = (2, HOURS, width)
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape))

    def add(self, day: int, hour: int, x: np.ndarray) -> None:
        ok = ~np.isnan(x)
        if not ok.any():
            return
        n, mean, m2 = self.n[day % 2, hour], self.mean[day % 2, hour], self.m2[day % 2, hour]
        n[ok] += 1
        delta = x[ok] - mean[ok]
        mean[ok] += delta / n[ok]
        m2[ok] += delta * (x[ok] - mean[ok])

    def combined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, mean, m2) per hour over both halves (Chan et al.'s pairwise update), shape (24, width)."""
        na, nb = self.n[0], self.n[1]
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = self.mean[1] - self.mean[0]
            mean = np.where(n > 0, (na * self.mean[0] + nb * self.mean[1]) / np.maximum(n, 1), np.nan)
            m2 = self.m2[0] + self.m2[1] + np.where(n > 0, delta * delta * na * nb / np.maximum(n, 1), 0.0)
        return n, mean, m2

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n.tolist(), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any], width: int) -> HourlyMoments:
        arrays = [np.array(data[k], dtype=float) for k in ("n", "mean", "m2")]
        if any(a.shape != (2, HOURS, width) for a in arrays):
            raise ValueError(f"hourly moments must have shape (2, {HOURS}, {width})")
        return cls(*arrays)


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of two (24, width) arrays; NaN where either is constant."""
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(
            (da * db).sum(axis=0) / np.sqrt((da * da).sum(axis=0) * (db * db).sum(axis=0)), dtype=float
        )


def seasonal_features(hourly: HourlyMoments, rule: SeasonalRule) -> np.ndarray:
    """Which features get hourly baselines (a boolean per feature)."""
    width = hourly.n.shape[2]
    if rule.mode == "off":
        return np.zeros(width, dtype=bool)
    if rule.mode == "daily":
        n, _, _ = hourly.combined()
        return np.asarray((n >= rule.min_hour_windows).all(axis=0), dtype=bool)
    covered = (hourly.n >= rule.min_hour_windows).all(axis=(0, 1))
    r = _correlation(hourly.mean[0], hourly.mean[1])
    return np.asarray(covered & (np.nan_to_num(r, nan=0.0) >= rule.min_correlation), dtype=bool)


@dataclass(frozen=True)
class DailyProfile:
    """Per-hour baseline arrays, shape (24, width); only ``features`` differ from the flat baseline."""

    features: np.ndarray  # bool per feature
    mean: np.ndarray
    std: np.ndarray
    q1: np.ndarray
    q3: np.ndarray
    # per gauge: the EWMA chart's standard deviation for the deseasonalised series (baseline.py)
    ewma_std: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "q1": self.q1.tolist(),
            "q3": self.q3.tolist(),
            "ewma_std": None if self.ewma_std is None else self.ewma_std.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], width: int, n_gauges: int) -> DailyProfile:
        features = np.array(data["features"], dtype=bool)
        arrays = [np.array(data[k], dtype=float) for k in ("mean", "std", "q1", "q3")]
        if features.shape != (width,) or any(a.shape != (HOURS, width) for a in arrays):
            raise ValueError(f"a daily profile must have {width} features and {HOURS} hours")
        ewma_std = None if data.get("ewma_std") is None else np.array(data["ewma_std"], dtype=float)
        if ewma_std is not None and ewma_std.shape != (n_gauges,):
            raise ValueError(f"a daily profile's ewma_std must have {n_gauges} gauges")
        mean, std, q1, q3 = arrays
        return cls(features, mean, std, q1, q3, ewma_std=ewma_std)


def residual_quartiles(
    rows: np.ndarray, hours: list[int], mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First and third quartiles of the rows in standard deviations of their own hour."""
    z = (rows - mean[hours]) / std[hours]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is NaN
        return np.nanpercentile(z, 25, axis=0), np.nanpercentile(z, 75, axis=0)
