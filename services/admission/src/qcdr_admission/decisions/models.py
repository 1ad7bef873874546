"""The ``admission_decisions`` table: one row per answered review (dry runs excepted)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_admission.db.base import AdmissionBase


class DecisionRow(AdmissionBase):
    __tablename__ = "admission_decisions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), comment="When the webhook answered.")
    uid: Mapped[str] = mapped_column(Text, comment="The AdmissionRequest uid.")
    event_id: Mapped[str] = mapped_column(
        Text, unique=True, comment="The admission.decision_made envelope id."
    )
    operation: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    namespace: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str] = mapped_column(Text, comment="request.userInfo.username")
    allowed: Mapped[bool] = mapped_column(Boolean)
    evaluated: Mapped[bool] = mapped_column(Boolean, comment="False: allowed without evaluation.")
    skipped: Mapped[str | None] = mapped_column(Text, comment="Why not evaluated (metadata-only, ...).")
    checks: Mapped[list[str]] = mapped_column(ARRAY(Text), comment="Every check with a result.")
    violations: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, comment="[{source, check, message, mode}] in the engine's order."
    )
    images: Mapped[list[str]] = mapped_column(ARRAY(Text))

    __table_args__ = (
        Index("ix_admission_decisions_time", "time", "id"),
        Index("ix_admission_decisions_namespace_time", "namespace", "time"),
        Index("ix_admission_decisions_checks", "checks", postgresql_using="gin"),
    )
