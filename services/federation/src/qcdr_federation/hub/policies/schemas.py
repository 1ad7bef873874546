"""API shapes of federated policies (operator API) and of their per-cluster status.

``PolicyCell`` is one cell of the cluster × policy matrix that ``GET /v1/clusters`` shows;
``FederatedPolicyStatus`` is the per-policy view of ``GET /v1/federated-policies/{id}/status``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.federation.v1 import (
    POLICY_NAME_PATTERN,
    FederatedPolicySpec,
    Override,
    Placement,
    PolicyApplyState,
    Rollout,
)

# a cluster that never reported on a placed policy: "pending" as the contract's state of that name
CellState = PolicyApplyState | Literal["pending"]


class PolicyCell(BaseModel):
    """Where one policy stands on one cluster."""

    model_config = ConfigDict(frozen=True)

    policy_id: str
    name: str
    desired_generation: int = Field(description="The policy's current generation on the hub.")
    generation: int | None = Field(description="The generation the cluster last reported.")
    state: CellState
    in_sync: bool = Field(
        description="The cluster reports the current generation and the hash the hub rendered for it."
    )
    message: str | None = None
    observed_at: datetime | None = None


class ClusterPolicyStatus(BaseModel):
    """One cluster's row of a policy's status."""

    model_config = ConfigDict(frozen=True)

    cluster: str
    placed: bool = Field(description="The policy is in the cluster's placed set now.")
    desired_hash: str | None = Field(description="The hash the hub renders for this cluster (placed only).")
    generation: int | None = None
    content_hash: str | None = None
    state: CellState
    in_sync: bool
    message: str | None = None
    observed_at: datetime | None = None


class FederatedPolicyStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    generation: int
    clusters: list[ClusterPolicyStatus]


class FederatedPolicyWrite(FederatedPolicySpec):
    """``POST /v1/federated-policies`` and ``PUT .../{id}``: the name plus the spec."""

    name: str = Field(pattern=POLICY_NAME_PATTERN, max_length=253)
    suspended: bool | None = Field(
        default=None,
        description="true: create the policy suspended (it reaches no cluster), or suspend it with "
        "this change (clusters keep the generation they have); false: resume it; omitted: unchanged.",
    )

    def spec(self) -> FederatedPolicySpec:
        return FederatedPolicySpec.model_validate(self.model_dump(exclude={"name", "suspended"}))


class FederatedPolicyRead(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    api_version: str
    kind: str
    generation: int
    content_hash: str
    source: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    template: dict[str, Any]
    placement: Placement
    overrides: tuple[Override, ...]
    enforce: bool
    description: str
    rollout: Rollout | None = None
    suspended: bool = False
    suspended_at: datetime | None = None
    suspended_by: str | None = None


class RolloutCluster(BaseModel):
    model_config = ConfigDict(frozen=True)

    cluster: str
    released_generation: int | None = Field(
        description="The generation released to the cluster (None: none yet)."
    )
    phase: Literal["waiting", "updating", "done", "failed"]
    message: str | None = None


class RolloutStatus(BaseModel):
    """``GET /v1/federated-policies/{id}/rollout``: where a gated policy's current generation stands."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    generation: int
    strategy: Literal["all", "progressive"]
    phase: Literal["complete", "progressing", "halted", "rolled_back", "suspended"]
    suspended: bool
    counts: dict[str, int] = Field(description="Clusters per phase: waiting, updating, done, failed.")
    clusters: list[RolloutCluster]


class FederatedPolicyVersionRead(BaseModel):
    model_config = ConfigDict(frozen=True)

    policy_id: str
    generation: int
    content_hash: str
    created_by: str
    created_at: datetime
    spec: FederatedPolicySpec


__all__ = [
    "CellState",
    "ClusterPolicyStatus",
    "FederatedPolicyRead",
    "FederatedPolicyStatus",
    "FederatedPolicyVersionRead",
    "FederatedPolicyWrite",
    "PolicyCell",
    "RolloutCluster",
    "RolloutStatus",
]
