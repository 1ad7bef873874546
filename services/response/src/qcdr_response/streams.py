"""Streams of the response service (names without the configurable key prefix) and the payloads
it publishes on ``response:events``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Findings from analysis (contract qcdr_common.contracts.findings.v1), read by group ``response``.
FINDINGS = "analysis:findings"
FINDING_RAISED = "analysis.finding_raised"
GROUP = "response"
# Policy and action status changes, for SOAR tools, the console and federation.
EVENTS = "response:events"
POLICY_CHANGED = "response.policy_changed"
POLICY_STATUS_CHANGED = "response.policy_status_changed"


class PolicyRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: int
    api_version: str
    kind: str
    namespace: str | None
    name: str
    family: str


class PolicyChanged(PolicyRef):
    """A policy got a new version (its content hash changed), or was created (version 1)."""

    version: int
    content_hash: str
    status: str
    finding_count: int


class PolicyStatusChanged(PolicyRef):
    version: int
    from_status: str | None
    to_status: str
    reason: str | None = None


# Response actions: requests for the response service's own executor (cluster and policy actions,
# and node actions whose node must first be looked up), per-node requests for the node agents, and
# the node agents' results.
ACTIONS = "response:actions"
NODE_ACTIONS_PREFIX = "response:node-actions:"
ACTION_RESULTS = "response:action-results"
EXECUTOR_GROUP = "response-executor"
RESULTS_GROUP = "response-results"


def node_actions_stream(node: str) -> str:
    return f"{NODE_ACTIONS_PREFIX}{node}"


PRODUCES = (EVENTS, ACTIONS, NODE_ACTIONS_PREFIX + "<node>")
CONSUMES = (FINDINGS, "federation:policies", ACTIONS, ACTION_RESULTS)
