"""``Finding`` v1: something analysis concluded from one or more events (stream ``analysis:findings``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from qcdr_common.contracts.events.v1 import NetworkDestination, ProcessInfo, Severity, Workload

VERSION = 1


class FindingKind(StrEnum):
    SOURCE = "source"  # a detection the source already made (a Qualys CDR finding, a Falco alert)
    ATTACK_TECHNIQUE = "attack_technique"  # an event matched an ATT&CK rule (Tetragon rule set)
    INTEL_MATCH = "intel_match"  # destination listed by threat intel or with bad reputation
    ANOMALY = "anomaly"
    DRIFT = "drift"
    DGA = "dga"
    CHAIN = "chain"


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        min_length=1, max_length=200, description="Deterministic: the same evidence, the same id."
    )
    kind: FindingKind
    detector: str = Field(min_length=1, max_length=100)
    category: str = Field(min_length=1, max_length=200)
    severity: Severity
    techniques: tuple[str, ...] = ()
    title: str = ""
    explanation: str = ""
    event_time: AwareDatetime
    evidence_event_ids: tuple[str, ...] = ()
    workload: Workload = Field(default_factory=Workload)
    process: ProcessInfo | None = None
    network: NetworkDestination | None = None
    source: str = Field(
        default="", description="The source of the first evidence event (qualys, tetragon, ...)."
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
