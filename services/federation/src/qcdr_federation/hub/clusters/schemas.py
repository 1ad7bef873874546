"""API shapes of spoke clusters (operator API)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN, ClusterHealth, PendingAction

from qcdr_federation.hub.policies.schemas import PolicyCell
from qcdr_federation.settings import MAX_BOOTSTRAP_TOKEN_TTL_S

# Kubernetes label syntax: placement selectors match these labels the way a label selector does
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_LABELS = 64


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Kubernetes label keys (``[prefix/]name``) and values; a ValueError names the bad one."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            raise ValueError(f"label key {key!r}: the prefix must be a DNS subdomain")
        if not _LABEL_NAME.fullmatch(name):
            raise ValueError(
                f"label key {key!r}: the name must be 1-63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        if value and not _LABEL_NAME.fullmatch(value):
            raise ValueError(
                f"label {key!r}: the value must be empty or 1-63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
    return labels


class ClusterDeclare(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CLUSTER_NAME_PATTERN, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class ClusterPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str] = Field(description="The cluster's labels, replaced as a whole.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class ClusterRead(BaseModel):
    """A spoke as the hub sees it; ``health`` is derived when read, from the last heartbeat."""

    model_config = ConfigDict(frozen=True)

    name: str
    id: str
    labels: dict[str, str]
    reported_labels: dict[str, str] = Field(
        default_factory=dict,
        description="What the spoke reported at registration (never used for placement).",
    )
    source: str
    health: ClusterHealth
    health_changed_at: datetime | None
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    version: str | None
    kubernetes_version: str | None
    node_count: int | None
    pod_count: int | None
    counts: dict[str, int]
    problems: list[str]
    rotate_requested: bool = False
    policies: dict[str, PolicyCell] = Field(default_factory=dict, description="Policy id → its cell.")


class BootstrapTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_BOOTSTRAP_TOKEN_TTL_S,
        description="Lifetime in seconds (default from settings).",
    )


class BootstrapTokenCreated(BaseModel):
    id: str
    cluster_name: str
    token: str = Field(description="Shown once: the hub keeps its SHA-256 only.")
    expires_at: datetime | None


class CredentialsRevoked(BaseModel):
    cluster_name: str
    revoked: int


class RotationRequested(BaseModel):
    cluster_name: str
    rotate_requested_at: datetime


class ClusterActions(BaseModel):
    """The response actions waiting on a spoke, from its last heartbeat."""

    cluster_name: str
    reported_at: datetime | None
    items: list[PendingAction]


def heartbeat_extras(heartbeat: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    counts = heartbeat.get("counts")
    problems = heartbeat.get("problems")
    return (
        {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {},
        [str(p) for p in problems] if isinstance(problems, list) else [],
    )
