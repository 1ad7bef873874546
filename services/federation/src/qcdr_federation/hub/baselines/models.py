"""The baselines the hub holds: the newest generation per (profile key, source cluster)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, PrimaryKeyConstraint, Sequence, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_federation.db.base import FederationBase

# every insert and every newer generation takes the next value, so a spoke's cursor ("after seq")
# sees updated baselines again, not only new ones
BASELINE_SEQ = Sequence("federation_baselines_seq", metadata=FederationBase.metadata)


class BaselineRow(FederationBase):
    __tablename__ = "federation_baselines"

    profile_key: Mapped[str] = mapped_column(Text, nullable=False)
    # the source cluster's id on the hub (federation_clusters.id)
    source_cluster_id: Mapped[str] = mapped_column(Text, nullable=False)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=BASELINE_SEQ.next_value())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        PrimaryKeyConstraint("profile_key", "source_cluster_id", name="pk_federation_baselines"),
        Index("ix_federation_baselines_seq", "seq", unique=True),
    )
