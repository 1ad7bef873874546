"""Settings of the analysis service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field
from qcdr_common.settings import CommonSettings


class AnalysisSettings(CommonSettings):
    service_name: str = "analysis"

    consume_in_app: bool = Field(
        default=True,
        description=(
            "Run the ingest:events consumer and the outbox relay inside `serve` as well, so the "
            "service alone does everything; turn off when `consume` runs as its own process."
        ),
    )
    consumer_group: str = Field(default="analysis", description="Consumer group on ingest:events.")
    leader_election: bool = Field(
        default=True,
        description=(
            "Consume only while this replica holds the analysis lease in Redis: with several "
            "replicas one consumes and the others stand by (the worker's state is in memory)."
        ),
    )
    leader_lease_s: float = Field(
        default=15.0,
        ge=0.3,
        description=(
            "How long the analysis lease lasts unless renewed; renewed, and tried by standbys, "
            "every third of it."
        ),
    )
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Per-detector configuration by detector name (QCDR_DETECTORS__INTEL_MATCH__"
            "REPUTATION_THRESHOLD=80); unknown detector names and unknown keys fail at start."
        ),
    )
    model_refit_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the background trainer checks whether the population models are due a refit.",
    )
    correlation_enabled: bool = Field(default=True, description="Run attack-chain correlation.")
    correlation_patterns_dir: Path | None = Field(
        default=None,
        description="A directory of your own chain patterns (*.yaml) loaded after the built-ins.",
    )
    correlation_idle_flush_s: float = Field(
        default=5.0,
        gt=0,
        description="After this long without a batch, events still waiting out the lateness are processed.",
    )
    findings_retention_s: float = Field(
        default=90 * 86_400.0,
        ge=0,
        description="Stored findings are deleted this long after they were raised (90 days); 0: never.",
    )
    received_retention_s: float = Field(
        default=7 * 86_400.0,
        ge=0,
        description="Envelope ids of handled messages are remembered this long to drop redeliveries "
        "(longer than QCDR_OUTBOX_RETENTION_S, what a replay can send again); 0: for good.",
    )
    idle_save_s: float = Field(
        default=5.0,
        gt=0,
        description="After this long without a batch, stateful detectors save what they hold unsaved "
        "and is due (profile counts after count_flush_interval, anomaly windows after "
        "checkpoint_every); a clean stop saves all of it.",
    )
    correlation_source_idle_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Off: one event-time watermark for all sources. Seconds: one per (source, cluster), the "
            "lowest of those that delivered within this long governs, so a source delivering in "
            "batches (the Qualys poller, a spoke catching up) is not late; set it just above the "
            "slowest source's interval (chains then wait for it)."
        ),
    )
    correlation_source_max_lag_s: float = Field(
        default=3600.0,
        gt=0,
        description="With correlation_source_idle_s: how far the slowest source may hold chains back "
        "behind the newest event time; older items of a source lagging further are late.",
    )
    shared_baselines_enabled: bool = Field(
        default=True,
        description=(
            "Consume federation:baselines: a baseline another cluster learned for an image becomes "
            "this cluster's profile when it has none or only a learning one (new workloads of the "
            "image start warm). Without federation the stream stays empty and costs nothing."
        ),
    )
    disabled_detectors: frozenset[str] = Field(
        default=frozenset(), description="Detector names not to run (unknown names fail at start)."
    )


@lru_cache
def get_settings() -> AnalysisSettings:
    return AnalysisSettings()
