"""Prometheus metrics of the hub (default registry, served at ``/metrics``).

``qualys_federation_syncs_total`` belongs to the federated policies (``hub/policies``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CLUSTERS = Gauge(
    "qualys_federation_clusters",
    "Spoke clusters by health, as the last health sweep derived it.",
    ["state"],
)
HEARTBEATS = Counter("qcdr_federation_heartbeats_total", "Heartbeats received from spokes.")
AUTH_FAILURES = Counter(
    "qcdr_federation_auth_failures_total",
    "Spoke requests refused by credential or bootstrap-token checks.",
    ["reason"],
)
FORWARDED = Counter(
    "qcdr_federation_forwarded_total",
    "Items spokes forwarded, by kind and outcome (accepted, duplicate, rejected).",
    ["kind", "outcome"],
)
COMMANDS = Counter(
    "qcdr_federation_commands_total",
    "Commands for spokes, by kind and outcome (queued, answered, expired).",
    ["kind", "outcome"],
)
HEALTH_TRANSITIONS = Counter(
    "qcdr_federation_health_transitions_total",
    "Cluster health changes the sweep recorded, by the new state.",
    ["state"],
)
