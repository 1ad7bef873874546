"""The seed's admission metrics (``qualys_admission_total``, ``qualys_admission_allowed_total``,
``qualys_admission_denied_total``) and the webhook's own.

Counted in the route with plain ``inc()`` calls; the request latency is observed around the
evaluation (decode, engine, encode), which is what the API server waits for beyond the network.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ADMISSION_TOTAL = Counter("qualys_admission", "Admission reviews answered (any outcome).")
ADMISSION_ALLOWED = Counter("qualys_admission_allowed", "Admission reviews allowed.")
ADMISSION_DENIED = Counter("qualys_admission_denied", "Admission reviews denied.")
ADMISSION_MALFORMED = Counter(
    "qcdr_admission_malformed", "Admission reviews refused as malformed (400), by reason.", ["reason"]
)
ADMISSION_SKIPPED = Counter(
    "qcdr_admission_skipped",
    "Reviews allowed without evaluation, by why (metadata-only update, subresource, operation, kind).",
    ["why"],
)
ADMISSION_RESULTS = Counter(
    "qcdr_admission_results",
    "Check results returned, by source kind (pss, policy) and mode.",
    ["source", "mode"],
)
ADMISSION_SECONDS = Histogram(
    "qcdr_admission_review_seconds",
    "Time to answer one review inside the service (decode, evaluate, encode).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
DECISIONS_WRITTEN = Counter("qcdr_admission_decisions_written", "Decisions stored in Postgres.")
DECISIONS_DROPPED = Counter(
    "qcdr_admission_decisions_dropped",
    "Decisions not stored: the in-memory queue was full, the write failed for good or a value was refused.",
    ["why"],
)
