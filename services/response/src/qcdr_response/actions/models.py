"""The tables of response actions (owner: the response service): the actions themselves and
their append-only audit trail."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_response.db.base import ResponseBase


class ActionState(StrEnum):
    PENDING = "pending"  # waiting for approval
    REJECTED = "rejected"
    WAITING = "waiting"  # a later playbook step: waits for the step before it
    QUEUED = "queued"  # the request is in the outbox / on its stream
    RUNNING = "running"  # the executor recorded its intent
    SUCCEEDED = "succeeded"  # done (containment: its lease is running)
    DRY_RUN = "dry_run"  # checked, nothing changed
    FAILED = "failed"
    SKIPPED = "skipped"  # target gone, or refused before running (protected, rate limited)
    CANCELLED = "cancelled"  # an earlier step of its run failed or was rejected
    RELEASING = "releasing"  # undo requested (by hand or because the lease expired)
    RELEASED = "released"  # undone
    UNDO_FAILED = "undo_failed"


# States after which nothing more happens to an action by itself
FINAL = frozenset(
    {
        ActionState.REJECTED,
        ActionState.DRY_RUN,
        ActionState.FAILED,
        ActionState.SKIPPED,
        ActionState.CANCELLED,
        ActionState.RELEASED,
    }
)


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class ActionRow(ResponseBase):
    """One action: a step of a playbook run for a finding, or one requested through the API."""

    __tablename__ = "response_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # the natural key: '<playbook>:<finding id>' for playbook runs (a redelivered finding can
    # never start a run twice), a fresh id for API requests; steps are ordered within a run
    run_id: Mapped[str] = mapped_column(Text, nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    playbook: Mapped[str | None] = mapped_column(Text, nullable=True)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False)
    target: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    finding_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    requested_by: Mapped[str] = mapped_column(Text, nullable=False)
    require_approval: Mapped[bool] = mapped_column(Boolean, nullable=False)
    continue_on_error: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    decided_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # which executor: 'response' or the node agent of this node
    node: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    containment: Mapped[bool] = mapped_column(Boolean, nullable=False)
    lease_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # what execute recorded for undo, the last result's message and details
    undo: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        UniqueConstraint("run_id", "step", name="uq_response_actions_run_step"),
        CheckConstraint(f"state IN ({_in(ActionState)})", name="state"),
        CheckConstraint("step >= 1", name="step_positive"),
        Index("ix_response_actions_state", "state"),
        Index("ix_response_actions_finding_id", "finding_id"),
        Index("ix_response_actions_lease", "lease_expires_at", postgresql_where="state = 'succeeded'"),
        Index("ix_response_actions_rate", "action", "started_at"),
        # the playbook cooldown's lookup: a run's first step, by playbook and time
        Index(
            "ix_response_actions_playbook_runs",
            "playbook",
            "created_at",
            postgresql_where="step = 1 AND playbook IS NOT NULL",
        ),
    )


class AuditRow(ResponseBase):
    """Who did what to which action, why, and with what result. Append-only: a trigger created
    by the migration refuses UPDATE and DELETE."""

    __tablename__ = "response_action_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("response_actions.id", ondelete="RESTRICT"), nullable=False
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    event: Mapped[str] = mapped_column(Text, nullable=False)
    finding_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)

    __table_args__ = (Index("ix_response_action_audit_action_id", "action_id", "id"),)
