"""``admission_policies`` (one row per stored policy, its JSON in ``spec``) and
``admission_policy_state`` (one row: the generation every change bumps, which replicas poll)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_admission.db.base import AdmissionBase


class PolicyRow(AdmissionBase):
    __tablename__ = "admission_policies"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, comment="The AdmissionPolicy JSON.")
    enabled: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer, comment="1 on create, +1 on every update.")
    generation: Mapped[int] = mapped_column(BigInteger, comment="The set's generation of the last change.")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    updated_by: Mapped[str] = mapped_column(Text, comment="The API token's name.")


class PolicyStateRow(AdmissionBase):
    __tablename__ = "admission_policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, comment="Bumped by every policy change.")

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
