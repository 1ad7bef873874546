"""The ``admission.decision_made`` event (stream ``admission:decisions``), so analysis sees who
tried to run what.

The payload model lives here until it moves to ``qcdr_common.contracts.admission.v1`` (the
contracts package belongs to libs/common); consumers should validate with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EVENT_TYPE = "admission.decision_made"


class ResultItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str = Field(description='"pss" or "policy:<name>".')
    check: str = Field(description="The upstream PSS id or the policy check id.")
    message: str
    mode: Literal["enforce", "warn", "audit"]


class AdmissionDecision(BaseModel):
    """One answered review (dry runs are neither stored nor published)."""

    model_config = ConfigDict(frozen=True)

    uid: str
    time: datetime
    operation: str
    kind: str
    namespace: str | None = None
    name: str | None = None
    user: str
    allowed: bool
    evaluated: bool = Field(description="False: allowed without evaluation (e.g. a metadata-only update).")
    skipped: str | None = None
    violations: list[ResultItem] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
