"""Prometheus counters of event intake (per source)."""

from __future__ import annotations

from prometheus_client import Counter

ITEMS_RECEIVED = Counter("qcdr_ingest_items_received_total", "Items received in event batches.", ["source"])
EVENTS_STORED = Counter(
    "qcdr_ingest_events_stored_total", "Events stored (and queued for publishing).", ["source"]
)
EVENTS_DUPLICATE = Counter(
    "qcdr_ingest_events_duplicate_total",
    "Valid events not stored again: their id was already known.",
    ["source"],
)
ITEMS_REJECTED = Counter(
    "qcdr_ingest_items_rejected_total", "Items that could not become events.", ["source"]
)
ITEMS_IGNORED = Counter(
    "qcdr_ingest_items_ignored_total",
    "Valid items that are not events for their source (Hubble flows in the middle of a connection).",
    ["source"],
)
BATCHES_REFUSED = Counter(
    "qcdr_ingest_batches_refused_total", "Whole batches refused, by HTTP status.", ["source", "status"]
)


def count_outcomes(source: str, *, stored: int, duplicates: int, rejected: int, ignored: int = 0) -> None:
    """What became of a batch's items (received ones are counted where they arrive): one place for
    the API, the Qualys poller and the Hubble collector."""
    EVENTS_STORED.labels(source=source).inc(stored)
    EVENTS_DUPLICATE.labels(source=source).inc(duplicates)
    ITEMS_REJECTED.labels(source=source).inc(rejected)
    ITEMS_IGNORED.labels(source=source).inc(ignored)
