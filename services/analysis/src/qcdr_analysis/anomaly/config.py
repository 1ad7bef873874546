"""Configuration of the ``workload_anomaly`` detector (``QCDR_DETECTORS__WORKLOAD_ANOMALY__…``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from qcdr_analysis.anomaly.features import DEFAULT_GAUGES
from qcdr_analysis.detectors import DetectorConfig


class WorkloadAnomalyConfig(DetectorConfig):
    learning_period: timedelta = Field(
        default=timedelta(hours=48),
        description="Event time a workload is observed before it is scored (the seed's 48 h).",
    )
    window: timedelta = Field(default=timedelta(minutes=1), description="Bucket width.")
    smoothing_windows: int = Field(
        default=5, ge=1, le=60, description="Windows averaged before the univariate tests."
    )
    allowed_lateness: timedelta = Field(
        default=timedelta(seconds=60),
        description="How long after its end a window waits for late events before it is scored.",
    )
    input_stall: timedelta = Field(
        default=timedelta(minutes=10),
        description=(
            "Windows wait for the slowest input (the events of each source and cluster, the "
            "samples of each source and cluster), unless it is this far behind the newest (a "
            "scraper down, a cluster gone, a source replaying a backlog): then they close without "
            "it. 10 min covers the Qualys poller's 5-minute interval and its delivery delay."
        ),
    )
    idle_after: timedelta = Field(
        default=timedelta(minutes=10),
        description="A workload with no event or sample for this long stops producing windows.",
    )
    gauges: tuple[str, ...] = Field(default=DEFAULT_GAUGES, description="Resource metrics modelled.")
    # univariate tests (the seed's defaults)
    zscore_threshold: float = Field(default=3.0, gt=0)
    iqr_multiplier: float = Field(default=1.5, gt=0)
    # effect size: a deviation must also matter, or a 200-workload cluster alerts all day
    count_min_ratio: float = Field(
        default=6.0, ge=1, description="A count must reach this multiple of its baseline."
    )
    count_min_excess: float = Field(
        default=2.5, ge=0, description="…and exceed it by this many events per minute."
    )
    gauge_min_relative: float = Field(
        default=1.0, ge=0, description="A resource level must rise by this fraction (1.0 = doubles)."
    )
    min_votes: int = Field(
        default=3,
        ge=1,
        le=4,
        description=(
            "Detectors (z-score, IQR, forest, k-means) that must agree; until the population models "
            "are fitted, at most 2 (z-score and IQR)."
        ),
    )
    rate_cooldown: timedelta = Field(
        default=timedelta(minutes=30),
        description="An episode ends after this long without an anomalous window; one finding per episode.",
    )
    # slow shifts of resource levels: EWMA control chart against the learned level
    ewma_lambda: float = Field(default=0.01, gt=0, le=1)
    ewma_limit: float = Field(default=4.0, gt=0, description="Control limit in EWMA standard deviations.")
    trend_min_relative: float = Field(default=0.15, ge=0, description="…and at least this relative shift.")
    trend_persistence: int = Field(default=10, ge=1, description="Windows the shift must last.")
    trend_cooldown: timedelta = Field(default=timedelta(hours=24))
    # daily profiles (seasonal.py)
    seasonality: Literal["off", "daily", "auto"] = Field(
        default="auto",
        description=(
            "Hourly baselines for features that follow the clock. auto: a feature whose 24 hourly "
            "means on even and odd learning days agree (needs a learning period that covers every "
            "hour twice, so 48 h); daily: every feature, once each hour was seen; off: flat only."
        ),
    )
    seasonal_min_correlation: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="auto: correlation of the even-day and odd-day hourly profiles a feature needs.",
    )
    # rollouts: a new image learns its own baseline, scored meanwhile against the one it replaced
    inherit_on_rollout: bool = Field(
        default=True,
        description=(
            "While a workload's new image learns (learning_period), score it against the baseline "
            "of the owner's previous image instead of not at all."
        ),
    )
    inherit_max_age: timedelta = Field(
        default=timedelta(days=14),
        description="…if that image was active within this long (event time) of the new one.",
    )
    # population models
    reservoir_size: int = Field(default=512, ge=16, le=10_000)
    min_training_rows: int = Field(default=256, ge=16)
    min_training_workloads: int = Field(default=3, ge=1)
    forest_trees: int = Field(default=100, ge=10, le=1000)
    forest_quantile: float = Field(default=0.9995, gt=0.5, lt=1)
    kmeans_max_clusters: int = Field(default=10, ge=2, le=64)
    kmeans_quantile: float = Field(default=0.999, gt=0.5, lt=1)
    kmeans_margin: float = Field(default=1.5, ge=1)
    refit_every: timedelta = Field(
        default=timedelta(hours=6), description="Event time between refits of the population models."
    )
    max_training_rows: int = Field(default=50_000, ge=256)
    checkpoint_every: timedelta = Field(
        default=timedelta(seconds=30),
        description="Wall time between checkpoints of window counts (state changes are written at once; "
        "a quiet stream checkpoints after idle_save_s, a clean stop at once).",
    )
    max_workloads: int = Field(default=50_000, ge=10, description="Workload states kept in memory.")
    seed: int = 20260504

    @model_validator(mode="after")
    def _sane(self) -> WorkloadAnomalyConfig:
        if self.window.total_seconds() < 1:
            raise ValueError("window must be at least 1 s")
        if self.learning_period < self.window * (self.smoothing_windows + 2):
            raise ValueError("learning_period must cover several windows")
        if len(set(self.gauges)) != len(self.gauges):
            raise ValueError("gauges must not repeat")
        return self
