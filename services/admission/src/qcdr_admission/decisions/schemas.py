"""API shapes of ``GET /v1/admission/decisions``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from qcdr_admission.decisions.event import ResultItem


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    time: datetime
    uid: str
    event_id: str
    operation: str
    kind: str
    namespace: str | None
    name: str | None
    user: str = Field(validation_alias="username")
    allowed: bool
    evaluated: bool
    skipped: str | None
    violations: list[ResultItem]
    images: list[str]
