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
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from qcdr_analysis.anomaly.seasonal import (
    HOURS,
    DailyProfile,
    HourlyMoments,
    SeasonalRule,
    residual_quartiles,
    seasonal_features,
)

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
    """A uniform sample of at most ``capacity`` vectors of a stream (Vitter's algorithm R), with
    the hour of day each was seen at (-1: unknown, a sample kept before hours were recorded)."""

    capacity: int
    rows: list[np.ndarray] = field(default_factory=list)
    seen: int = 0
    hours: list[int] = field(default_factory=list)

    def add(self, x: np.ndarray, rng: random.Random, hour: int = -1) -> None:
        self.seen += 1
        if len(self.hours) != len(self.rows):
            self.hours = [-1] * len(self.rows)
        if len(self.rows) < self.capacity:
            self.rows.append(x.copy())
            self.hours.append(hour)
            return
        slot = rng.randrange(self.seen)
        if slot < self.capacity:
            self.rows[slot] = x.copy()
            self.hours[slot] = hour

    def known_hours(self) -> list[int] | None:
        """Every row's hour, or None when some row's hour is unknown."""
        if len(self.hours) != len(self.rows) or any(h < 0 for h in self.hours):
            return None
        return self.hours

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
    daily: DailyProfile | None = None  # hourly limits of the features that follow the clock
    # An hour's view only: how far this hour's gauge levels lie from the flat level, taken off the
    # raw gauges before the EWMA chart so that a daily cycle is not read as a slow shift.
    gauge_offset: np.ndarray | None = None

    @cached_property
    def _hours(self) -> tuple[Baseline, ...]:
        daily = self.daily
        assert daily is not None
        f = daily.features
        n_counts = self.mean.size - self.gauge_level.size
        views = []
        for h in range(HOURS):
            # Schedules drift: a day that starts at 07:40 must not be judged by 07:00's night
            # limits. An hour's limits are the widest of it and its two neighbours; quiet hours
            # among quiet neighbours keep their own. The chart's offset is the hour's own level.
            near = [(h - 1) % HOURS, h, (h + 1) % HOURS]
            views.append(
                Baseline(
                    windows=self.windows,
                    mean=np.where(f, daily.mean[near].max(axis=0), self.mean),
                    std=np.where(f, daily.std[near].max(axis=0), self.std),
                    q1=np.where(f, daily.q1[near].min(axis=0), self.q1),
                    q3=np.where(f, daily.q3[near].max(axis=0), self.q3),
                    gauge_level=self.gauge_level,
                    ewma_std=self.ewma_std if daily.ewma_std is None else daily.ewma_std,
                    gauge_offset=np.where(f, daily.mean[h], self.mean)[n_counts:] - self.mean[n_counts:],
                )
            )
        return tuple(views)

    def at(self, hour: int) -> Baseline:
        """The limits that apply at an hour of day (UTC): this baseline when it has no profile."""
        return self if self.daily is None else self._hours[hour]

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "q1": self.q1.tolist(),
            "q3": self.q3.tolist(),
            "gauge_level": self.gauge_level.tolist(),
            "ewma_std": self.ewma_std.tolist(),
            "daily": self.daily.to_json() if self.daily is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        def arr(name: str) -> np.ndarray:
            return np.array(data[name], dtype=float)

        mean, gauge_level = arr("mean"), arr("gauge_level")
        daily = data.get("daily")  # absent in baselines learnt before daily profiles
        return cls(
            windows=int(data["windows"]),
            mean=mean,
            std=arr("std"),
            q1=arr("q1"),
            q3=arr("q3"),
            gauge_level=gauge_level,
            ewma_std=arr("ewma_std"),
            daily=DailyProfile.from_json(daily, mean.size, gauge_level.size) if daily is not None else None,
        )


def _ewma_std(raw_std: np.ndarray, rho: np.ndarray, n: np.ndarray, ewma_lambda: float) -> np.ndarray:
    """Standard deviation of the EWMA statistic around a learnt level, per gauge."""
    # EWMA variance for an AR(1) process: sigma^2 * lambda/(2-lambda) * (1+rho)/(1-rho)
    # (the usual large-t approximation when lambda is small relative to 1-rho)
    inflation = np.sqrt((1 + rho) / (1 - rho))
    ewma_std = raw_std * math.sqrt(ewma_lambda / (2 - ewma_lambda)) * inflation
    # the learned level is itself an estimate, and a poor one for an autocorrelated series: its
    # standard error widens the limit (n samples carry n (1-rho)/(1+rho) samples' information)
    level_se = raw_std * inflation / np.sqrt(np.maximum(n, 1))
    return np.asarray(np.sqrt(ewma_std**2 + level_se**2), dtype=float)


def _deseasonalised_ewma_std(
    hourly: HourlyMoments,
    gauge_level: np.ndarray,
    rho: np.ndarray,
    n: np.ndarray,
    n_counts: int,
    smoothing: int,
    ewma_lambda: float,
) -> np.ndarray:
    """The EWMA chart's standard deviation for gauges less their hourly level: the spread within
    an hour. Learning kept it for smoothed windows only; times sqrt(smoothing) it bounds the raw
    windows' spread from above (a mean of k values with no negative correlation has at least
    1/sqrt(k) of their spread). The lag-1 correlation is the raw series' own, cycle included:
    larger than the deseasonalised series', so the limit is wider, not narrower."""
    n_h, _, m2_h = hourly.combined()
    total = n_h[:, n_counts:].sum(axis=0)
    within = np.sqrt(m2_h[:, n_counts:].sum(axis=0) / np.maximum(total - HOURS, 1)) * math.sqrt(smoothing)
    floor = np.maximum(np.abs(np.nan_to_num(gauge_level)) * GAUGE_RELATIVE_FLOOR, ABSOLUTE_FLOOR)
    return _ewma_std(np.fmax(np.nan_to_num(within, nan=0.0), floor), rho, n, ewma_lambda)


def _limits(
    mean: np.ndarray, std: np.ndarray, q1: np.ndarray, q3: np.ndarray, n_counts: int, smoothing: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard deviations and quartiles with their floors (features on the last axis)."""
    floor = np.empty(mean.shape)
    # counts: the standard deviation of a Poisson rate averaged over `smoothing` windows
    floor[..., :n_counts] = np.sqrt(
        np.maximum(np.nan_to_num(mean[..., :n_counts]), COUNT_RATE_FLOOR) / smoothing
    )
    floor[..., n_counts:] = np.maximum(
        np.abs(np.nan_to_num(mean[..., n_counts:])) * GAUGE_RELATIVE_FLOOR, ABSOLUTE_FLOOR
    )
    std = np.fmax(np.nan_to_num(std, nan=0.0), floor)
    # IQR at least one event in the smoothing span (counts) or 1 % of the level (gauges)
    min_iqr = floor.copy()
    min_iqr[..., :n_counts] = 1.0 / smoothing
    iqr = np.fmax(np.nan_to_num(q3 - q1, nan=0.0), min_iqr)
    centre = np.where(np.isnan(q1), mean, (q1 + q3) / 2)
    q1 = np.where(np.isnan(q1) | (q3 - q1 < min_iqr), centre - iqr / 2, q1)
    q3 = np.where(np.isnan(q3) | (q3 - q1 < min_iqr), centre + iqr / 2, q3)
    return std, q1, q3


def daily_profile(
    hourly: HourlyMoments,
    rule: SeasonalRule,
    sample: np.ndarray,
    hours: list[int],
    *,
    n_counts: int,
    smoothing: int,
) -> DailyProfile | None:
    """Hourly limits for the features that follow the clock (seasonal.py); None when none does."""
    features = seasonal_features(hourly, rule)
    if not features.any():
        return None
    n, mean, m2 = hourly.combined()
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.where(n > 1, np.sqrt(m2 / np.maximum(n - 1, 1)), np.nan)
    zero_q = np.full(mean.shape, np.nan)
    std, _, _ = _limits(mean, std, zero_q, zero_q, n_counts, smoothing)
    if sample.shape[0] >= 4:
        rq1, rq3 = residual_quartiles(sample, hours, mean, std)
        q1, q3 = mean + rq1 * std, mean + rq3 * std
    else:
        q1 = q3 = zero_q
    std, q1, q3 = _limits(mean, std, q1, q3, n_counts, smoothing)
    return DailyProfile(features, mean, std, q1, q3)


def freeze(
    smoothed: Moments,
    reservoir: Reservoir,
    raw_gauges: Moments,
    lag1: Lag1,
    *,
    n_counts: int,
    smoothing: int,
    ewma_lambda: float,
    hourly: HourlyMoments | None = None,
    rule: SeasonalRule | None = None,
) -> Baseline:
    """The baseline from what learning gathered (features: ``n_counts`` counts, then gauges)."""
    width = smoothed.mean.size
    mean = np.where(smoothed.n > 0, smoothed.mean, np.nan)
    sample = reservoir.matrix(width)
    if sample.shape[0] >= 4:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no samples) is NaN
            q1 = np.nanpercentile(sample, 25, axis=0) if sample.size else np.full(width, np.nan)
            q3 = np.nanpercentile(sample, 75, axis=0) if sample.size else np.full(width, np.nan)
    else:
        q1 = q3 = np.full(width, np.nan)
    std, q1, q3 = _limits(mean, smoothed.std, q1, q3, n_counts, smoothing)
    gauge_level = np.where(raw_gauges.n > 0, raw_gauges.mean, np.nan)
    raw_std = np.fmax(
        np.nan_to_num(raw_gauges.std, nan=0.0),
        np.maximum(np.abs(np.nan_to_num(gauge_level)) * GAUGE_RELATIVE_FLOOR, ABSOLUTE_FLOOR),
    )
    rho = lag1.rho()
    ewma_std = _ewma_std(raw_std, rho, raw_gauges.n, ewma_lambda)
    hours = reservoir.known_hours()
    daily = None
    if hourly is not None and rule is not None and hours is not None:
        daily = daily_profile(hourly, rule, sample, hours, n_counts=n_counts, smoothing=smoothing)
        if daily is not None:
            seasonal = _deseasonalised_ewma_std(
                hourly, gauge_level, rho, raw_gauges.n, n_counts, smoothing, ewma_lambda
            )
            use = daily.features[n_counts:]
            daily = replace(daily, ewma_std=np.where(use, seasonal, ewma_std))
    return Baseline(
        windows=int(np.max(smoothed.n)) if smoothed.n.size else 0,
        mean=np.nan_to_num(mean, nan=0.0),
        std=std,
        q1=q1,
        q3=q3,
        gauge_level=gauge_level,
        ewma_std=ewma_std,
        daily=daily,
    )
