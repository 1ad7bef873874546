"""``WorkloadSamples`` v1: resource measurements of workloads (stream ``ingest:samples``).

Ingest accepts them at ``POST /v1/metrics/{source}`` (``json``: this shape; ``prometheus``:
remote-write fields as JSON, mapped onto these names) and publishes one ``ingest.samples_received``
envelope per accepted chunk (many samples, not one envelope per number: a cluster scraped every
30 s produces far more samples than events). A chunk holds the samples of one cluster (the
envelope's ``cluster_id``), oldest first. Analysis feeds them to the time-series detectors next to
the counts it derives from events. Samples are not stored anywhere, so they cannot be replayed:
they only matter live, and a lost chunk costs one window of resource data.

Metric names are snake_case and carry their unit: ``cpu_cores`` (cores in use, a rate),
``memory_bytes`` (working set), ``syscalls_per_second``, ``network_rx_bytes_per_second``,
``network_tx_bytes_per_second``, ``connections_per_second``. Other names are accepted as long as
they match ``[a-z][a-z0-9_]{0,63}``; analysis only models the names it is configured for.
"""

from __future__ import annotations

import math
import re

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from qcdr_common.contracts.events.v1 import Workload

VERSION = 1
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_SAMPLES_PER_ENVELOPE = 1000
KNOWN_METRICS = (
    "cpu_cores",
    "memory_bytes",
    "syscalls_per_second",
    "network_rx_bytes_per_second",
    "network_tx_bytes_per_second",
    "connections_per_second",
)


class WorkloadSample(BaseModel):
    """Values of one workload (one container of it) at one instant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: AwareDatetime
    workload: Workload
    values: dict[str, float] = Field(min_length=1, max_length=64)

    @field_validator("values")
    @classmethod
    def _names_and_finite_values(cls, value: dict[str, float]) -> dict[str, float]:
        for name, number in value.items():
            if not METRIC_NAME.match(name):
                raise ValueError(f"metric name {name!r} must match {METRIC_NAME.pattern}")
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"metric {name}: {number} is not a finite, non-negative number")
        return value


class WorkloadSamples(BaseModel):
    """The payload of an ``ingest.samples_received`` envelope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1, max_length=40)
    samples: tuple[WorkloadSample, ...] = Field(min_length=1, max_length=MAX_SAMPLES_PER_ENVELOPE)
