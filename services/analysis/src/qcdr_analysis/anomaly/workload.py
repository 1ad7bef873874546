"""One workload's windows: open buckets, recent closed windows, learning state and alert memory.

Time is in window numbers (event time // window width), so everything here is event time: a
replay of last week's events learns and alerts exactly as the live stream did.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qcdr_common.contracts.events.v1 import SecurityEvent, Workload

from qcdr_analysis.anomaly import features as ft
from qcdr_analysis.anomaly.baseline import Baseline, Lag1, Moments, Reservoir, freeze
from qcdr_analysis.anomaly.seasonal import HourlyMoments, SeasonalRule

EVIDENCE_PER_WINDOW = 5


@dataclass
class Bucket:
    """What one window of one workload saw so far."""

    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # exec, connect, write, other
    binaries: set[str] = field(default_factory=set)
    destinations: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    gauge_sum: dict[int, float] = field(default_factory=dict)
    gauge_n: dict[int, int] = field(default_factory=dict)
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (source, id) of a few events

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "binaries": sorted(self.binaries),
            "destinations": sorted(self.destinations),
            "ports": sorted(self.ports),
            "gauge_sum": {str(k): v for k, v in self.gauge_sum.items()},
            "gauge_n": {str(k): v for k, v in self.gauge_n.items()},
            "evidence": [list(e) for e in self.evidence],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bucket:
        return cls(
            counts=[int(c) for c in data["counts"]],
            binaries=set(data["binaries"]),
            destinations=set(data["destinations"]),
            ports={int(p) for p in data["ports"]},
            gauge_sum={int(k): float(v) for k, v in data["gauge_sum"].items()},
            gauge_n={int(k): int(v) for k, v in data["gauge_n"].items()},
            evidence=[(str(a), str(b)) for a, b in data["evidence"]],
        )


@dataclass
class Window:
    """A closed window, ready to score."""

    number: int
    raw: np.ndarray
    smoothed: np.ndarray
    evidence: list[tuple[str, str]]


class WorkloadState:
    def __init__(
        self,
        key: str,
        workload: Workload,
        n_gauges: int,
        reservoir_size: int,
        gauge_names: tuple[str, ...] = (),
        *,
        daily: bool = True,
    ) -> None:
        """``daily``: keep the per-hour moments daily profiles are learnt from (seasonality on)."""
        self.key = key
        self.gauge_names = gauge_names
        self.workload = workload
        self.n_gauges = n_gauges
        self.width = len(ft.EVENT_FEATURES) + n_gauges
        self.first_window: int | None = None
        # the window learning counts from when it is later than first_window: a new workload
        # whose first events are a backfill (days old) learns from what the engine watches now
        self.learn_from: int | None = None
        self.last_closed: int | None = None
        self.last_activity: int | None = None
        self.buckets: dict[int, Bucket] = {}
        self.recent: deque[np.ndarray] = deque()
        self.recent_evidence: deque[list[tuple[str, str]]] = deque()
        self.last_gauges = np.full(n_gauges, np.nan)
        self.smoothed_moments = Moments.zeros(self.width)
        self.raw_gauge_moments = Moments.zeros(n_gauges)
        self.lag1 = Lag1.zeros(n_gauges)
        self.reservoir = Reservoir(reservoir_size)
        # learning only: moments per hour of day, for daily profiles (None once frozen)
        self.hourly: HourlyMoments | None = HourlyMoments.zeros(self.width) if daily else None
        self.baseline: Baseline | None = None
        # A new image of a workload is scored against the baseline of the image it replaced
        # (``inherited_from``) until it has learnt its own (engine.py, rollouts).
        self.inherited: Baseline | None = None
        self.inherited_from: str | None = None
        self.ewma = np.full(n_gauges, np.nan)
        self.trend_run = np.zeros(n_gauges, dtype=int)  # consecutive windows beyond the limit
        self.alerts: dict[str, int] = {}  # alert key -> window number of the last finding
        self.dirty = False  # changed since the last checkpoint
        self.changed = False  # a change that must be written with the batch (state, alerts)
        self.generation = 0

    @property
    def ready(self) -> bool:
        return self.baseline is not None

    @property
    def scoring_baseline(self) -> Baseline | None:
        """What windows are scored against: the own baseline, else an inherited one, else none."""
        return self.baseline if self.baseline is not None else self.inherited

    def inherit(self, donor: WorkloadState) -> None:
        """Score against ``donor``'s baseline (the image this one replaced) while learning."""
        baseline = donor.scoring_baseline
        if baseline is None or self.baseline is not None:
            return
        self.inherited = baseline
        # a donor that itself inherited passes on where its baseline came from
        self.inherited_from = donor.inherited_from if donor.baseline is None else donor.key
        self.ewma = baseline.gauge_level.copy()
        self.changed = True

    def learning_start(self, fallback: int) -> int:
        """The window learning is counted from (``fallback`` before the first one)."""
        first = self.first_window if self.first_window is not None else fallback
        return first if self.learn_from is None else max(first, self.learn_from)

    # -- observing ---------------------------------------------------------------------------
    def bucket(self, number: int) -> Bucket | None:
        """The open bucket for window ``number``; None when that window was already scored (late)."""
        if self.last_closed is not None and number <= self.last_closed:
            return None
        found = self.buckets.get(number)
        if found is None:
            found = self.buckets[number] = Bucket()
        if self.first_window is None or number < self.first_window:
            self.first_window = number
            self.changed = True
        if self.last_activity is None or number > self.last_activity:
            self.last_activity = number
        self.dirty = True
        return found

    def add_event(self, number: int, kind: int, event: SecurityEvent) -> bool:
        bucket = self.bucket(number)
        if bucket is None:
            return False
        bucket.counts[kind] += 1
        if kind == ft.EXEC and event.process is not None:
            bucket.binaries.add(event.process.path or event.process.name or "")
        elif kind == ft.CONNECT and event.network is not None:
            network = event.network
            bucket.destinations.add(str(network.ip) if network.ip is not None else network.domain or "")
            if network.port is not None:
                bucket.ports.add(network.port)
        if len(bucket.evidence) < EVIDENCE_PER_WINDOW:
            bucket.evidence.append((event.source, event.id))
        return True

    def add_sample(self, number: int, values: dict[int, float]) -> bool:
        bucket = self.bucket(number)
        if bucket is None:
            return False
        for index, value in values.items():
            bucket.gauge_sum[index] = bucket.gauge_sum.get(index, 0.0) + value
            bucket.gauge_n[index] = bucket.gauge_n.get(index, 0) + 1
        return True

    # -- closing -----------------------------------------------------------------------------
    def close_until(self, watermark: int, idle_windows: int, smoothing: int) -> list[Window]:
        """Close every window before ``watermark``; gaps of an active workload count as zero.

        A gap longer than ``idle_windows`` is quiet wherever it lies: after ``idle_windows`` zero
        windows the rest is skipped in one step, both after the newest activity and before it (one
        old event beside live ones, a workload back after days), so closing costs what was seen,
        not how long ago it was."""
        if self.first_window is None:
            return []
        start = self.first_window if self.last_closed is None else self.last_closed + 1
        if start >= watermark:
            return []
        closed: list[Window] = []
        number = start
        active = start - 1  # the latest window known active before ``number``
        while number < watermark:
            bucket = self.buckets.pop(number, None)
            if bucket is None:
                idle = (
                    self.last_activity is None
                    or number - self.last_activity > idle_windows
                    or number - active > idle_windows
                )
                if idle and not any(n < watermark for n in self.buckets):
                    # nothing more to close: the workload went quiet (scaled down, finished)
                    self.recent.clear()
                    self.recent_evidence.clear()
                    number = watermark
                    break
                if idle:
                    # jump over the quiet stretch to the next window that saw something
                    number = min(n for n in self.buckets if n < watermark)
                    self.recent.clear()
                    self.recent_evidence.clear()
                    continue
                bucket = Bucket()
            else:
                active = number
            closed.append(self._close(number, bucket, smoothing))
            number += 1
        self.last_closed = watermark - 1
        self.dirty = True
        return [w for w in closed if w is not None]

    def _close(self, number: int, bucket: Bucket, smoothing: int) -> Window:
        n_events = len(ft.EVENT_FEATURES)
        raw = np.empty(self.width)
        c = bucket.counts
        raw[:n_events] = (
            c[ft.EXEC],
            len(bucket.binaries),
            c[ft.CONNECT],
            len(bucket.destinations),
            len(bucket.ports),
            c[ft.FILE_WRITE],
            c[ft.OTHER],
        )
        gauges = self.last_gauges.copy()  # a missed scrape carries the last level forward
        for index, total in bucket.gauge_sum.items():
            gauges[index] = total / bucket.gauge_n[index]
        self.last_gauges = gauges
        raw[n_events:] = gauges
        self.recent.append(raw)
        self.recent_evidence.append(bucket.evidence)
        while len(self.recent) > smoothing:
            self.recent.popleft()
            self.recent_evidence.popleft()
        if len(self.recent) > 1:
            # a mean over the windows that have a value; this runs once per workload and window,
            # so it avoids vstack and nansum, whose checks cost more than the sums on a few rows
            stacked = np.array(self.recent)
            missing = np.isnan(stacked)
            present = len(self.recent) - missing.sum(axis=0)
            stacked[missing] = 0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                smoothed = stacked.sum(axis=0) / np.where(present > 0, present, np.nan)
        else:
            smoothed = raw.copy()
        evidence = [e for window in self.recent_evidence for e in window]
        return Window(number, raw, smoothed, evidence)

    # -- learning ----------------------------------------------------------------------------
    def learn(self, window: Window, rng: random.Random, smoothing: int, hour: int, day: int) -> None:
        """Learn from a closed window that started at ``hour`` (of day, UTC) of ``day``."""
        n_events = len(ft.EVENT_FEATURES)
        self.raw_gauge_moments.add(window.raw[n_events:])
        self.lag1.add(window.raw[n_events:])
        if len(self.recent) >= smoothing:  # only full smoothing spans describe the steady state
            self.smoothed_moments.add(window.smoothed)
            self.reservoir.add(window.smoothed, rng, hour)
            if self.hourly is not None:
                self.hourly.add(day, hour, window.smoothed)

    def freeze(self, smoothing: int, ewma_lambda: float, rule: SeasonalRule | None = None) -> None:
        self.baseline = freeze(
            self.smoothed_moments,
            self.reservoir,
            self.raw_gauge_moments,
            self.lag1,
            n_counts=len(ft.EVENT_FEATURES),
            smoothing=smoothing,
            ewma_lambda=ewma_lambda,
            hourly=self.hourly,
            rule=rule,
        )
        self.hourly = None  # the profile, if any, is in the baseline now
        self.inherited = self.inherited_from = None  # its own from now on
        self.ewma = self.baseline.gauge_level.copy()
        self.changed = True

    def standardized_rows(self) -> np.ndarray:
        """The learned reservoir in baseline units (the population models' training rows): each
        row against the limits of its own hour when the baseline has a daily profile."""
        if self.baseline is None or not self.reservoir.rows:
            return np.empty((0, self.width))
        rows = self.reservoir.matrix(self.width)
        hours = self.reservoir.known_hours()
        if self.baseline.daily is None or hours is None:
            return standardize(rows, self.baseline)
        out = np.empty(rows.shape)
        by_hour = np.array(hours)
        for hour in np.unique(by_hour):
            pick = by_hour == hour
            out[pick] = standardize(rows[pick], self.baseline.at(int(hour)))
        return out

    # -- persistence -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def arr(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "workload": self.workload.model_dump(mode="json"),
            "n_gauges": self.n_gauges,
            "gauge_names": list(self.gauge_names),
            "first_window": self.first_window,
            "learn_from": self.learn_from,
            "last_closed": self.last_closed,
            "last_activity": self.last_activity,
            "buckets": {str(k): b.to_json() for k, b in self.buckets.items()},
            "recent": [arr(r) for r in self.recent],
            "recent_evidence": [[list(e) for e in w] for w in self.recent_evidence],
            "last_gauges": arr(self.last_gauges),
            "moments": [
                arr(self.smoothed_moments.n),
                arr(self.smoothed_moments.mean),
                arr(self.smoothed_moments.m2),
            ],
            "gauge_moments": [
                arr(self.raw_gauge_moments.n),
                arr(self.raw_gauge_moments.mean),
                arr(self.raw_gauge_moments.m2),
            ],
            "lag1": [
                arr(self.lag1.n),
                arr(self.lag1.sx),
                arr(self.lag1.sxx),
                arr(self.lag1.sxy),
                arr(self.lag1.prev),
            ],
            "reservoir": {
                "seen": self.reservoir.seen,
                "rows": [arr(r) for r in self.reservoir.rows],
                "hours": self.reservoir.hours,
            },
            "hourly": self.hourly.to_json() if self.hourly is not None else None,
            "baseline": self.baseline.to_json() if self.baseline is not None else None,
            "inherited": None
            if self.inherited is None
            else {"from": self.inherited_from, "baseline": self.inherited.to_json()},
            "ewma": arr(self.ewma),
            "trend_run": self.trend_run.tolist(),
            "alerts": self.alerts,
        }

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any], reservoir_size: int, generation: int) -> WorkloadState:
        def arr(values: list[float | None]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=float)

        state = cls(
            key,
            Workload.model_validate(data["workload"]),
            int(data["n_gauges"]),
            reservoir_size,
            tuple(data.get("gauge_names", ())),
        )
        state.first_window = data["first_window"]
        state.learn_from = data.get("learn_from")  # absent in states saved before it existed
        state.last_closed = data["last_closed"]
        state.last_activity = data["last_activity"]
        state.buckets = {int(k): Bucket.from_json(b) for k, b in data["buckets"].items()}
        state.recent = deque(arr(r) for r in data["recent"])
        state.recent_evidence = deque([(str(a), str(b)) for a, b in w] for w in data["recent_evidence"])
        state.last_gauges = arr(data["last_gauges"])
        state.smoothed_moments = Moments(*(arr(a) for a in data["moments"]))
        state.raw_gauge_moments = Moments(*(arr(a) for a in data["gauge_moments"]))
        state.lag1 = Lag1(*(arr(a) for a in data["lag1"]))
        state.reservoir = Reservoir(
            reservoir_size,
            [arr(r) for r in data["reservoir"]["rows"]],
            int(data["reservoir"]["seen"]),
            [int(h) for h in data["reservoir"].get("hours", [])],
        )
        # A state saved before daily profiles has none: it learns without one (not an empty one,
        # which would miss the hours already seen and bias the profile).
        hourly = data.get("hourly")
        state.hourly = HourlyMoments.from_json(hourly, state.width) if hourly is not None else None
        state.baseline = Baseline.from_json(data["baseline"]) if data["baseline"] is not None else None
        inherited = data.get("inherited")  # absent in states saved before rollouts inherited
        if inherited is not None:
            state.inherited = Baseline.from_json(inherited["baseline"])
            state.inherited_from = inherited["from"]
        state.ewma = arr(data["ewma"])
        state.trend_run = np.array(data["trend_run"], dtype=int)
        state.alerts = {str(k): int(v) for k, v in data["alerts"].items()}
        state.generation = generation
        return state


def standardize(rows: np.ndarray, baseline: Baseline) -> np.ndarray:
    """Rows in standard deviations from the baseline mean, NaN as 0, clipped to ±20."""
    with np.errstate(invalid="ignore"):
        z = (rows - baseline.mean) / baseline.std
    return np.asarray(np.clip(np.nan_to_num(z, nan=0.0), -20.0, 20.0), dtype=float)
