"""Tables of forwarded items: which were received (deduplication) and the findings themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, PrimaryKeyConstraint, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_federation.db.base import FederationBase


class ReceivedRow(FederationBase):
    """One forwarded item the hub has taken: forwarding is at-least-once, so a second copy of
    (cluster, kind, item id) finds this row and is counted as a duplicate."""

    __tablename__ = "federation_received"

    cluster_id: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    item_id: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        PrimaryKeyConstraint("cluster_id", "kind", "item_id", name="pk_federation_received"),
        # pruning old dedupe rows scans by age
        Index("ix_federation_received_received_at", "received_at"),
    )


class ForwardedFindingRow(FederationBase):
    """A finding a spoke's analysis made, kept on the hub for the console (``cluster_id`` is the
    spoke's cluster id on the hub, the payload's ``workload.cluster`` its name)."""

    __tablename__ = "federation_findings"

    cluster_id: Mapped[str] = mapped_column(Text, nullable=False)
    id: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    category: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        PrimaryKeyConstraint("cluster_id", "id", name="pk_federation_findings"),
        Index("ix_federation_findings_event_time", "event_time"),
    )
