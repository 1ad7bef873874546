"""Metrics of the federated-policy consumer."""

from __future__ import annotations

from prometheus_client import Counter

MESSAGES = Counter(
    "qcdr_response_federation_messages_total",
    "federation:policies messages handled, by message (placed, removed) and result "
    "(created, updated, unchanged, stale, revoked, ignored, rejected, duplicate).",
    ["message", "result"],
)
REJECTIONS = Counter(
    "qcdr_response_federation_rejections_total",
    "Placed policies announced as response.policy_rejected, by stage (validation, conflict, apply).",
    ["stage"],
)
