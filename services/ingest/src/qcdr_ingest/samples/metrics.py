"""Prometheus counters of sample intake (per source)."""

from __future__ import annotations

from prometheus_client import Counter

SAMPLES = Counter(
    "qcdr_ingest_samples_total",
    "Input samples of POST /v1/metrics/{source}, by outcome: accepted (published), rejected "
    "(invalid), ignored (a series not used, a counter's first sample).",
    ["source", "outcome"],
)
BATCHES_REFUSED = Counter(
    "qcdr_ingest_sample_batches_refused_total",
    "Whole sample batches refused (nothing published), by HTTP status.",
    ["source", "status"],
)
