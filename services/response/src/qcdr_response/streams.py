"""Streams of the response service (names without the configurable key prefix) and the payloads
it publishes on ``response:events``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.federation.v1 import POLICIES_STREAM, POLICY_PLACED, POLICY_REMOVED

# Findings from analysis (contract qcdr_common.contracts.findings.v1), read by group ``response``.
FINDINGS = "analysis:findings"
FINDING_RAISED = "analysis.finding_raised"
GROUP = "response"
# Policy and action status changes, for SOAR tools, the console and federation.
EVENTS = "response:events"
POLICY_CHANGED = "response.policy_changed"
POLICY_STATUS_CHANGED = "response.policy_status_changed"
POLICY_REJECTED = "response.policy_rejected"
# Policies a federation hub placed on this cluster, published by the federation spoke (contract
# qcdr_common.contracts.federation.v1), read by group ``response`` as well.
FEDERATION_POLICIES = POLICIES_STREAM
FEDERATION_POLICY_PLACED = POLICY_PLACED
FEDERATION_POLICY_REMOVED = POLICY_REMOVED
MAX_REASON = 2000  # PolicyApplyStatus.message's limit: the spoke passes reasons on to the hub


class FederationOrigin(BaseModel):
    """Which placement of a federated policy an event is about (the hub's policy id and the
    generation and content hash of the rendered manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: str
    generation: int
    content_hash: str

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> FederationOrigin | None:
        """From ``response_policies.federation`` (which keeps more than the three keys)."""
        if stored is None:
            return None
        return cls(
            policy_id=str(stored["policy_id"]),
            generation=int(stored["generation"]),
            content_hash=str(stored["content_hash"]),
        )


class PolicyRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: int
    api_version: str
    kind: str
    namespace: str | None
    name: str
    family: str
    # set for policies placed by a federation hub (family ``federated``), null otherwise
    federation: FederationOrigin | None = None


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


class PolicyRejected(BaseModel):
    """A placed policy this service cannot carry out: its manifest failed validation, a policy
    that did not come from the hub holds its identity, or the cluster refused it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    federation: FederationOrigin
    api_version: str
    kind: str
    namespace: str | None
    name: str
    reason: str = Field(max_length=MAX_REASON)
    stage: Literal["validation", "conflict", "apply"]


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
CONSUMES = (FINDINGS, FEDERATION_POLICIES, ACTIONS, ACTION_RESULTS)
