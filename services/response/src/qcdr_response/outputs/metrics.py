"""Per-sink delivery metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENT = Counter("qcdr_output_sent_total", "Messages a sink accepted.", ["sink"])
FAILED = Counter("qcdr_output_failed_total", "Messages a sink refused for good or never took.", ["sink"])
RETRIED = Counter(
    "qcdr_output_retried_total", "Attempts that will be retried (retry or unknown outcome).", ["sink"]
)
DEAD_LETTERED = Counter("qcdr_output_dead_lettered_total", "Messages moved to the dead letters.", ["sink"])
DELIVERY_SECONDS = Histogram(
    "qcdr_output_delivery_seconds",
    "From queueing (the finding's transaction) to the sink's acceptance.",
    ["sink"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
