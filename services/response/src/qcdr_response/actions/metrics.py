"""The seed's action metrics (``qualys_response_actions_total{action}``,
``qualys_response_actions_failed``) and the state of containment."""

from __future__ import annotations

from prometheus_client import Counter

ACTIONS_TOTAL = Counter(
    "qualys_response_actions_total",
    "Response actions that finished (any outcome, dry runs included), by action.",
    ["action"],
)
ACTIONS_FAILED = Counter(
    "qualys_response_actions_failed",
    "Response actions that failed, by action.",
    ["action"],
)
ACTIONS_OUTCOMES = Counter(
    "qcdr_response_action_outcomes_total",
    "Response action results by action, operation (execute or undo) and outcome.",
    ["action", "op", "outcome"],
)
