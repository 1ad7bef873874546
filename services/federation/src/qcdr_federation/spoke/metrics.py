"""The spoke agent's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SYNCS = Counter(
    "qcdr_federation_spoke_syncs",
    "Policy pulls from the hub by outcome: changed (a new set stored), unchanged (304), superseded "
    "(another replica stored a set meanwhile: asked again), failed.",
    ["outcome"],
)
FORWARDED = Counter(
    "qcdr_federation_spoke_forwarded",
    "Items forwarded to the hub and accepted there (duplicates included), by kind.",
    ["kind"],
)
FORWARD_REJECTED = Counter(
    "qcdr_federation_spoke_forward_rejected",
    "Forwarded items the hub refused one by one (logged, not retried), by kind.",
    ["kind"],
)
HUB_UP = Gauge("qcdr_federation_spoke_hub_up", "1 when the last call to the hub got an answer, else 0.")
LAST_CONTACT = Gauge(
    "qcdr_federation_spoke_last_contact_timestamp_seconds",
    "Unix time of the last answer from the hub.",
)
