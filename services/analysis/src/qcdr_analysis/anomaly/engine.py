"""The workload anomaly engine: windows in, findings out, all in event time and in memory.

``observe_events`` / ``observe_samples`` add to the open windows of each workload; the highest
event time seen, less the allowed lateness, is the watermark: every window before it is closed,
learnt from (learning workloads) or scored (ready ones). All windows closed by one call are scored
together, so the population models run once per micro-batch over a matrix, never per event.

Persistence is split by cost: a change that alters what the engine will say (learning finished,
an alert raised, a workload first seen) is written in the batch's own transaction; window counts
are checkpointed every ``checkpoint_every`` (a crash loses at most that much of the counts of the
open windows, never a baseline or an alert, and never repeats an alert).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from prometheus_client import Counter
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity, Workload
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.contracts.samples.v1 import WorkloadSample

from qcdr_analysis.anomaly import features as ft
from qcdr_analysis.anomaly import population
from qcdr_analysis.anomaly.baseline import Baseline
from qcdr_analysis.anomaly.config import WorkloadAnomalyConfig
from qcdr_analysis.anomaly.explain import rate_finding, trend_finding
from qcdr_analysis.anomaly.scoring import rate_verdict
from qcdr_analysis.anomaly.seasonal import SeasonalRule, hour_and_day
from qcdr_analysis.anomaly.workload import Window, WorkloadState
from qcdr_analysis.input_clocks import InputKey
from qcdr_analysis.profiles.identity import has_identity, workload_key

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATE_EVENTS = Counter(
    "qcdr_anomaly_late_events_total",
    "Events that arrived after their window was scored (counted by the profiler, not in windows).",
)
DETECTOR = "workload_anomaly"


def baseline_key(workload: Workload) -> str:
    """The owner and the image it runs: a new image version of a Deployment learns afresh (scored
    meanwhile against the baseline of the image it replaced, see ``inherit_on_rollout``)."""
    image = workload.image_digest or workload.image or ""
    return f"{workload_key(workload)}@{image}"


def owner_of(key: str) -> str:
    """The workload key of a baseline key (owner names cannot hold '@'; image references can)."""
    return key.split("@", 1)[0]


# Donor states read from Postgres for rollouts, kept until used; a bound, not a cache.
MAX_DONORS = 1000


class WorkloadAnomalyEngine:
    def __init__(self, config: WorkloadAnomalyConfig) -> None:
        self.config = config
        self.names = ft.EVENT_FEATURES + tuple(config.gauges)
        self.n_counts = len(ft.EVENT_FEATURES)
        self.gauge_index = {name: i for i, name in enumerate(config.gauges)}
        self.window_seconds = config.window.total_seconds()
        self.learning_windows = int(config.learning_period / config.window)
        self.idle_windows = max(1, int(config.idle_after / config.window))
        self.lateness = config.allowed_lateness
        self.rate_cooldown = max(1, int(config.rate_cooldown / config.window))
        self.trend_cooldown = max(1, int(config.trend_cooldown / config.window))
        self.states: OrderedDict[str, WorkloadState] = OrderedDict()
        # baseline keys in memory by owner, and states of owners' earlier images read from
        # Postgres (detectors/workload_anomaly.refresh): where a new image finds its donor
        self.owners: dict[str, set[str]] = {}
        self.donors: dict[str, WorkloadState] = {}
        self.inherit_windows = int(config.inherit_max_age / config.window)
        self.model: population.PopulationModel | None = None
        self.max_seen: datetime | None = None
        # the newest time of each input (see clock): events per source and cluster, samples per
        # source and cluster; an input that fell behind by input_stall is dropped from here
        self.marks: dict[InputKey, datetime] = {}
        self.marks_moved = False  # since the last save (persisted with the checkpoints)
        self.last_fit: datetime | None = None
        self.rng = random.Random(config.seed)
        self.seasonal = SeasonalRule(config.seasonality, config.seasonal_min_correlation)
        self.late_events = 0
        self.late_samples = 0

    # -- time ------------------------------------------------------------------------------
    def window_of(self, when: datetime) -> int:
        return int((when - EPOCH).total_seconds() // self.window_seconds)

    def window_end(self, number: int) -> datetime:
        return EPOCH + timedelta(seconds=(number + 1) * self.window_seconds)

    def hour_and_day(self, number: int) -> tuple[int, int]:
        """Hour of day (UTC) and day number at which window ``number`` starts."""
        return hour_and_day(number * self.window_seconds)

    def _mark(self, key: InputKey, when: datetime) -> bool:
        """Move input ``key``'s mark forward to ``when``; whether it moved."""
        mark = self.marks.get(key)
        if mark is not None and when <= mark:
            return False
        self.marks[key] = when
        return True

    def _seen(self, key: InputKey, when: datetime) -> None:
        if self._mark(key, when):
            self.marks_moved = True
        if self.max_seen is None or when > self.max_seen:
            self.max_seen = when

    def install_marks(self, marks: dict[InputKey, datetime]) -> None:
        """How far each input had got in the previous process (a restart, a new leader). They
        only ever hold windows back: the newest time stays what this process has seen, so a stored
        mark far ahead (another pipeline's, a clock once wrong) cannot make live events late."""
        for key, when in marks.items():
            self._mark(key, when)

    def clock(self) -> datetime | None:
        """Event time up to which every input has arrived (the basis of the watermark).

        Inputs are consumed independently and run at their own pace: the Qualys poller delivers
        minutes late, a spoke forwards in batches, a node's clock runs behind, samples come from
        another stream. One clock for all would close a window before the slower inputs'
        events for it arrived and drop them as late, so each input keeps its own mark and windows
        close at the lowest. An input ``input_stall`` behind the newest (a scraper down, a cluster
        gone, a source replaying a backlog) holds nothing any more: it is dropped from the marks
        and counts again once it catches up, its events meanwhile late.
        """
        if self.max_seen is None:
            return None
        try:
            floor = self.max_seen - self.config.input_stall
        except OverflowError:  # the newest time is near year 1 (Go's zero time): nothing is behind
            floor = datetime.min.replace(tzinfo=UTC)
        stalled = [key for key, mark in self.marks.items() if mark < floor]
        for key in stalled:
            del self.marks[key]
            self.marks_moved = True
        return min(self.max_seen, *self.marks.values())

    # -- states ----------------------------------------------------------------------------
    def state_for(self, workload: Workload, number: int | None = None) -> WorkloadState:
        """The state of a workload's baseline key, made when new (``number``: the window that
        brought it, for the age limit of an inherited baseline)."""
        key = baseline_key(workload)
        state = self.states.get(key)
        if state is None:
            state = WorkloadState(
                key,
                workload,
                len(self.config.gauges),
                self.config.reservoir_size,
                tuple(self.config.gauges),
                daily=self.seasonal.mode != "off",
            )
            state.changed = True
            watched = self.clock()
            if number is not None and watched is not None:
                # first seen in events older than what the engine watches now (a backfill, a node
                # flushing days of buffer): learning counts from now, not from the old events
                now = self.window_of(watched) - 1
                if number < now:
                    state.learn_from = now
            if self.config.inherit_on_rollout:
                donor = self._donor(owner_of(key), key, number)
                if donor is not None:
                    state.inherit(donor)
            self._put(state)
            while len(self.states) > self.config.max_workloads:
                # the least recently active workload leaves memory (it reloads from Postgres)
                old, _ = self.states.popitem(last=False)
                self._unindex(old)
        else:
            self.states.move_to_end(key)
            state.workload = workload
        return state

    def _put(self, state: WorkloadState) -> None:
        self.states[state.key] = state
        self.owners.setdefault(owner_of(state.key), set()).add(state.key)

    def _unindex(self, key: str) -> None:
        keys = self.owners.get(owner_of(key))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.owners[owner_of(key)]

    def _donor(self, owner: str, key: str, number: int | None) -> WorkloadState | None:
        """The owner's most recently active other image with a baseline to score against, if its
        last activity is within ``inherit_max_age`` of ``number``."""
        candidates = [self.states[k] for k in self.owners.get(owner, ()) if k != key]
        stored = self.donors.pop(owner, None)
        if stored is not None and stored.key != key and stored.key not in self.owners.get(owner, ()):
            candidates.append(stored)
        usable = [
            (c.last_activity, c)
            for c in candidates
            if c.scoring_baseline is not None and c.last_activity is not None
        ]
        if not usable:
            return None
        last, donor = max(usable, key=lambda pair: pair[0])
        if number is not None and number - last > self.inherit_windows:
            return None
        return donor

    def offer_donors(self, states: Iterable[WorkloadState]) -> None:
        """States of earlier images read from Postgres, for owners whose new image appears now."""
        for state in states:
            if len(self.donors) >= MAX_DONORS:
                self.donors.clear()  # unused offers (the new image's events were all ignored)
            self.donors[owner_of(state.key)] = state

    def install_states(self, states: Iterable[WorkloadState]) -> None:
        for state in states:
            self._put(state)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            if self.states.pop(key, None) is not None:
                self._unindex(key)

    # -- input -----------------------------------------------------------------------------
    def observe_events(self, events: Sequence[SecurityEvent]) -> list[Finding]:
        self.add_events(events)
        return self.advance()

    def observe_samples(self, samples: Sequence[WorkloadSample], source: str = "") -> list[Finding]:
        self.add_samples(samples, source)
        return self.advance()

    def add_events(self, events: Sequence[SecurityEvent]) -> None:
        """Count events into their windows without closing any (see :meth:`advance`)."""
        for event in events:
            kind = ft.classify(event)
            if kind == ft.IGNORED or not has_identity(event.workload):
                continue
            number = self.window_of(event.event_time)
            state = self.state_for(event.workload, number)
            if not state.add_event(number, kind, event):
                self.late_events += 1
                LATE_EVENTS.inc()
            self._seen(("events", event.source, event.workload.cluster or ""), event.event_time)

    def add_samples(self, samples: Sequence[WorkloadSample], source: str = "") -> None:
        """Add resource samples (from ``source``) to their windows without closing any."""
        for sample in samples:
            if not has_identity(sample.workload):
                continue
            values = {self.gauge_index[k]: v for k, v in sample.values.items() if k in self.gauge_index}
            if not values:
                continue
            number = self.window_of(sample.time)
            state = self.state_for(sample.workload, number)
            if not state.add_sample(number, values):
                self.late_samples += 1
            self._seen(("samples", source, sample.workload.cluster or ""), sample.time)

    # -- windows ---------------------------------------------------------------------------
    def advance(self, until: datetime | None = None) -> list[Finding]:
        """Close and score every window that ended before the watermark (or ``until``)."""
        if until is None:
            clock = self.clock()
            if clock is None:
                return []
            try:
                until = clock - self.lateness
            except OverflowError:  # the clock is near year 1 (Go's zero time): no window has ended
                return []
        watermark = self.window_of(until)
        closed: list[tuple[WorkloadState, Window]] = []
        smoothing = self.config.smoothing_windows
        for state in self.states.values():
            if state.last_closed is not None and state.last_closed >= watermark - 1:
                continue
            for window in state.close_until(watermark, self.idle_windows, smoothing):
                closed.append((state, window))
        if not closed:
            return []
        return self._score(closed)

    def finish(self) -> list[Finding]:
        """Close every window (the end of a replay or a simulation)."""
        if self.max_seen is None:
            return []
        return self.advance(self.max_seen + self.config.window)

    def _score(self, closed: list[tuple[WorkloadState, Window]]) -> list[Finding]:
        findings: list[Finding] = []
        # rounds: the k-th window closed for each workload; a round holds at most one window of a
        # workload, so it is scored as one matrix while each workload's EWMA stays sequential
        rounds: list[list[tuple[WorkloadState, Window]]] = []
        position: dict[str, int] = {}
        for state, window in closed:
            if state.baseline is None:
                hour, day = self.hour_and_day(window.number)
                state.learn(window, self.rng, self.config.smoothing_windows, hour, day)
                first = state.learning_start(window.number)
                if window.number - first + 1 >= self.learning_windows:
                    state.freeze(self.config.smoothing_windows, self.config.ewma_lambda, self.seasonal)
                    continue
                if state.inherited is None:
                    continue
                # a new image still learning: scored against the baseline it inherited
            k = position.get(state.key, 0)
            position[state.key] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append((state, window))
        for scored in rounds:
            findings.extend(self._score_round(scored))
        return findings

    def _score_round(self, scored: list[tuple[WorkloadState, Window]]) -> list[Finding]:
        config = self.config
        n = self.n_counts
        # each window against the limits of its hour (the flat baseline without a daily profile)
        baselines = [
            b.at(self.hour_and_day(w.number)[0]) for s, w in scored if (b := s.scoring_baseline) is not None
        ]
        smoothed = np.vstack([w.smoothed for _, w in scored])
        mean = np.vstack([b.mean for b in baselines])
        std = np.vstack([b.std for b in baselines])
        q1 = np.vstack([b.q1 for b in baselines])
        q3 = np.vstack([b.q3 for b in baselines])
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (smoothed - mean) / std
            excess = smoothed - mean
            effect = np.zeros(smoothed.shape, dtype=bool)
            effect[:, :n] = (smoothed[:, :n] >= mean[:, :n] * config.count_min_ratio) & (
                excess[:, :n] >= config.count_min_excess
            )
            level = np.abs(mean[:, n:])
            effect[:, n:] = (level > 0) & (excess[:, n:] >= level * config.gauge_min_relative)
            valid = ~np.isnan(smoothed)
            z_any = (valid & (z > config.zscore_threshold) & effect).any(axis=1)
            iqr_any = (valid & (smoothed > q3 + config.iqr_multiplier * (q3 - q1)) & effect).any(axis=1)
        forest_flags = kmeans_flags = np.zeros(len(scored), dtype=bool)
        forest_scores = kmeans_distances = np.full(len(scored), np.nan)
        if self.model is not None:
            rows = np.clip(np.nan_to_num(z, nan=0.0, posinf=20.0, neginf=-20.0), -20.0, 20.0)
            forest_scores, forest_flags, kmeans_distances, kmeans_flags = self.model.votes(rows)
        votes = z_any.astype(int) + iqr_any + forest_flags + kmeans_flags
        # without fitted population models only the two univariate tests can vote
        needed = config.min_votes if self.model is not None else min(config.min_votes, 2)
        candidates = np.flatnonzero((votes >= needed) & (z_any | iqr_any))
        findings: list[Finding] = []
        for i in candidates:
            state, window = scored[i]
            baseline = baselines[i]
            verdict = rate_verdict(
                window.smoothed, baseline, self.names, n, config, bool(forest_flags[i]), bool(kmeans_flags[i])
            )
            if len(verdict.votes) < needed or not verdict.deviations:
                continue
            # one finding per episode: an anomaly that lasts (a level that stays up) is not news
            # every window; a new episode starts after `rate_cooldown` of normal windows
            last = state.alerts.get("rate")
            state.alerts["rate"] = window.number
            state.changed = True
            if last is not None and window.number - last < self.rate_cooldown:
                continue
            findings.append(
                rate_finding(
                    self,
                    state,
                    window,
                    verdict,
                    forest_score=float(forest_scores[i]),
                    kmeans_distance=float(kmeans_distances[i]),
                )
            )
        findings.extend(self._trend_round(scored, baselines))
        return findings

    def _trend_round(
        self, scored: list[tuple[WorkloadState, Window]], baselines: list[Baseline]
    ) -> list[Finding]:
        config = self.config
        n = self.n_counts
        raw = np.vstack([w.raw[n:] for _, w in scored])
        # a daily profile's hourly level is taken off first: the chart follows the deseasonalised
        # series, so a busy afternoon is not a slow shift and a shift hidden by the cycle shows
        offsets = [b.gauge_offset for b in baselines]
        if any(o is not None for o in offsets):
            raw = raw - np.vstack([np.zeros(raw.shape[1]) if o is None else o for o in offsets])
        ewma = np.vstack([s.ewma for s, _ in scored])
        level = np.vstack([b.gauge_level for b in baselines])
        ewma_std = np.vstack([b.ewma_std for b in baselines])
        runs = np.vstack([s.trend_run for s, _ in scored])
        lam = config.ewma_lambda
        present = ~np.isnan(raw)
        start = np.where(np.isnan(ewma), level, ewma)
        updated = np.where(present, lam * raw + (1 - lam) * start, start)
        with np.errstate(invalid="ignore"):
            shift = updated - level
            beyond = (
                present
                & ~np.isnan(level)
                & (shift > config.ewma_limit * ewma_std)
                & (shift > config.trend_min_relative * np.abs(level))
            )
        runs = np.where(beyond, runs + 1, 0)
        for i, (state, _) in enumerate(scored):
            state.ewma = updated[i]
            state.trend_run = runs[i]
        findings: list[Finding] = []
        for i, g in zip(*np.nonzero(runs >= config.trend_persistence), strict=True):
            state, window = scored[i]
            key = f"trend:{config.gauges[g]}"
            last = state.alerts.get(key)
            if last is not None and window.number - last < self.trend_cooldown:
                continue
            state.alerts[key] = window.number
            state.changed = True
            findings.append(trend_finding(self, state, window, int(g)))
        return findings

    # -- population models -----------------------------------------------------------------
    def ready_states(self) -> list[WorkloadState]:
        return [s for s in self.states.values() if s.baseline is not None and s.reservoir.rows]

    def refit_due(self) -> bool:
        if self.max_seen is None:
            return False
        if self.last_fit is not None and self.max_seen - self.last_fit < self.config.refit_every:
            return False
        ready = 0
        for state in self.states.values():
            if state.baseline is not None:
                ready += 1
                if ready >= self.config.min_training_workloads:
                    return True
        return False

    def training_rows(self) -> tuple[np.ndarray, int]:
        """Standardized rows of every ready workload (subsampled to ``max_training_rows``)."""
        parts = [s.standardized_rows() for s in self.ready_states()]
        parts = [p for p in parts if p.shape[0]]
        if not parts:
            return np.empty((0, len(self.names))), 0
        rows = np.vstack(parts)
        if rows.shape[0] > self.config.max_training_rows:
            pick = np.random.default_rng(self.config.seed).choice(
                rows.shape[0], self.config.max_training_rows, replace=False
            )
            rows = rows[pick]
        return rows, len(parts)

    def fit_model(self) -> population.PopulationModel | None:
        """Gather the rows and fit now (the in-memory stack); None when there are too few."""
        rows, workloads = self.training_rows()
        self.last_fit = self.max_seen  # even when too few rows: retry after refit_every
        return self.fit_rows(rows, workloads, self.max_seen or EPOCH)

    def fit_rows(
        self, rows: np.ndarray, workloads: int, fitted_at: datetime
    ) -> population.PopulationModel | None:
        """Fit on rows gathered earlier; touches no engine state, so the service runs it in a
        thread while batches go on. None when there are too few rows or workloads."""
        config = self.config
        if rows.shape[0] < config.min_training_rows or workloads < config.min_training_workloads:
            return None
        return population.fit(
            rows,
            workloads,
            features=self.names,
            fitted_at=fitted_at,
            trees=config.forest_trees,
            forest_quantile=config.forest_quantile,
            max_clusters=config.kmeans_max_clusters,
            kmeans_quantile=config.kmeans_quantile,
            kmeans_margin=config.kmeans_margin,
            seed=config.seed,
        )

    def install_model(self, model: population.PopulationModel) -> None:
        """Swap the models in one assignment: a batch scores with the old or the new, never a mix."""
        if model.features != self.names:
            raise ValueError(f"model features {model.features} do not match {self.names}")
        self.model = model
        if self.last_fit is None or model.fitted_at > self.last_fit:
            self.last_fit = model.fitted_at

    # -- persistence bookkeeping ----------------------------------------------------------
    def changed_states(self, *, checkpoint: bool) -> list[WorkloadState]:
        """States to write now: every changed one, and every dirty one at a checkpoint."""
        return [s for s in self.states.values() if s.changed or (checkpoint and s.dirty)]

    def discard_unsaved(self) -> list[str]:
        """Forget states with unsaved changes (they reload from Postgres); their keys."""
        gone = [k for k, s in self.states.items() if s.changed or s.dirty]
        self.forget(gone)
        self.marks_moved = True  # the rolled-back transaction may have held their save
        return gone

    @staticmethod
    def severity_for(ratio: float, votes: int) -> Severity:
        return Severity.HIGH if ratio >= 10 or votes >= 4 else Severity.MEDIUM


__all__ = ["DETECTOR", "Finding", "FindingKind", "WorkloadAnomalyEngine", "baseline_key"]
