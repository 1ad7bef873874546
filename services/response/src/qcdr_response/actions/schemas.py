"""API shapes of response actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.actions.v1 import ACTION_NAME_PATTERN, ActionTarget

from qcdr_response.actions.models import ActionRow, ActionState, AuditRow
from qcdr_response.actions.playbook import Duration


class ActionRead(BaseModel):
    id: int
    run_id: str
    step: int
    playbook: str | None
    action: str
    scope: str
    state: ActionState
    dry_run: bool
    target: dict[str, Any]
    parameters: dict[str, Any]
    finding_id: str | None
    reason: str
    requested_by: str
    require_approval: bool
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    node: str | None
    containment: bool
    lease_seconds: int | None
    lease_expires_at: datetime | None = Field(description="When the containment is undone unless renewed.")
    outcome: str | None
    message: str | None
    details: dict[str, Any] | None
    undo: dict[str, Any] | None = Field(description="What undo will reverse.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    released_at: datetime | None

    @classmethod
    def of(cls, row: ActionRow) -> ActionRead:
        return cls.model_validate({k: getattr(row, k) for k in cls.model_fields})


class AuditRead(BaseModel):
    id: int
    at: datetime
    actor: str
    event: str
    finding_id: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, row: AuditRow) -> AuditRead:
        return cls(
            id=row.id,
            at=row.at,
            actor=row.actor,
            event=row.event,
            finding_id=row.finding_id,
            detail=row.detail,
        )


class ActionDetail(ActionRead):
    audit: list[AuditRead]


class ActionCreate(BaseModel):
    """``POST /v1/actions``: one action, by hand (a SOAR tool or the CLI)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern=ACTION_NAME_PATTERN)
    target: ActionTarget
    parameters: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = Field(default=False, description="Only check; the service's dry-run mode forces it.")
    require_approval: bool = False
    lease: Duration | None = Field(
        default=None, description="Containment lease: seconds, or 90s / 15m / 2h / 1d."
    )
    reason: str = Field(default="", max_length=2000)
    finding_id: str | None = Field(default=None, max_length=200)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


class Renewal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease: Duration | None = Field(
        default=None, description="New lease from now: seconds or 90s / 15m / 2h / 1d."
    )


class CatalogEntry(BaseModel):
    name: str
    scope: str
    description: str
    requires: list[str]
    containment: bool
    reversible: bool
    permissions: list[str]
    parameters: dict[str, Any] = Field(description="JSON Schema of the parameters.")
