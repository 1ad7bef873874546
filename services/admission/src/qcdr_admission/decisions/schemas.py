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


class KeyCount(BaseModel):
    key: str
    count: int


class DecisionStats(BaseModel):
    """The decision log in ``[since, until)``: how many answered, how many denied, and what the
    denials were for (the 20 largest of each)."""

    total: int = Field(description="Stored decisions (allowed and denied).")
    denied: int
    by_check: list[KeyCount] = Field(
        description='Denied decisions per enforcing check, keyed "<source>/<check>" (e.g. '
        '"pss/privileged", "policy:<name>/<check>"); a decision counts once per check.'
    )
    by_namespace: list[KeyCount] = Field(description="Denied decisions per namespace (namespaced objects).")
    by_image: list[KeyCount] = Field(description="Denied decisions per container image.")
