"""Commands for spokes, from request to the spoke's answer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, Index, Integer, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_federation.db.base import FederationBase


class CommandState(StrEnum):
    PENDING = "pending"  # waiting for the spoke's long poll
    DELIVERED = "delivered"  # handed to the spoke; handed again if no result within the redelivery time
    DONE = "done"  # the spoke posted its response API's answer
    EXPIRED = "expired"  # nobody answered within the command's time to live


class CommandRow(FederationBase):
    __tablename__ = "federation_commands"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    cluster_id: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    action_id: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    state: Mapped[str] = mapped_column(Text, nullable=False, default=CommandState.PENDING.value)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        # the spoke's poll: its open commands, oldest first
        Index("ix_federation_commands_cluster_state", "cluster_id", "state", "created_at"),
    )
