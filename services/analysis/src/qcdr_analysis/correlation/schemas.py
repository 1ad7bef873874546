"""API shapes of ``/v1/chains``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from qcdr_common.api.pagination import Page
from qcdr_common.contracts.events.v1 import Severity


class TechniqueRead(BaseModel):
    id: str
    name: str | None = Field(description="From MITRE ATT&CK v18.1; null for an id it does not know.")
    tactics: list[str] = []


class ChainStep(BaseModel):
    name: str
    event_id: str
    event_time: datetime
    techniques: list[TechniqueRead]
    finding_ids: list[str] = []
    cluster: str | None = Field(default=None, description="The cluster of the step's event.")
    workload: dict[str, str] = Field(
        default_factory=dict,
        description="Where the step's event happened (cluster, namespace, pod, container, owner, image).",
    )


class ChainRead(BaseModel):
    """A complete attack chain (a finding of kind ``chain``)."""

    id: str
    pattern: str
    title: str
    severity: Severity
    confidence: float
    techniques: list[TechniqueRead]
    steps: list[ChainStep]
    join: dict[str, str]
    clusters: list[str] = Field(
        description="Every cluster a step came from (several for a cross-cluster chain)."
    )
    event_time: datetime = Field(description="Event time of the step that completed the chain.")
    created_at: datetime
    explanation: str


ChainList = Page[ChainRead]


class PartialList(BaseModel):
    """Chains begun but not complete, from the correlation engine's last checkpoint."""

    items: list[dict[str, Any]]
    live_keys: int
