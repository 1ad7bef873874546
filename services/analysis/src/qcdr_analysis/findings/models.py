"""The tables analysis owns: findings, received envelopes and the outbox.

``analysis_received`` holds the id of every envelope consumed from ``ingest:events``: inserting it
in the same transaction as the findings is what turns at-least-once delivery into exactly-once
effects (a redelivered envelope conflicts and is skipped).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.streams import outbox_table
from sqlalchemy import CheckConstraint, DateTime, Index, SmallInteger, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_analysis.db.base import AnalysisBase

_SEVERITIES = ", ".join(f"'{s.value}'" for s in Severity)


class FindingRow(AnalysisBase):
    """One finding; ``payload`` is the ``Finding`` JSON as published, the columns serve filters."""

    __tablename__ = "analysis_findings"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    detector: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)
    # 0 (info) .. 4 (critical): ``min_severity`` filters compare numbers, not words
    severity_rank: Mapped[int] = mapped_column(SmallInteger)
    techniques: Mapped[list[str]] = mapped_column(ARRAY(Text))
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    namespace: Mapped[str | None] = mapped_column(Text)
    cluster: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    evidence_event_ids: Mapped[list[str]] = mapped_column(ARRAY(Text))
    # the ``analysis.finding_raised`` envelope: a replay re-publishes under the same id, so
    # consumers that already have it deduplicate
    envelope_id: Mapped[str] = mapped_column(Text, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint(f"severity IN ({_SEVERITIES})", name="severity_known"),
        CheckConstraint("severity_rank BETWEEN 0 AND 4", name="severity_rank_range"),
        # the API's order (newest event first, id as tie-breaker) and its time-range filter
        Index("ix_analysis_findings_event_time_id", "event_time", "id"),
        Index("ix_analysis_findings_created_at", "created_at"),
        Index("ix_analysis_findings_namespace_event_time", "namespace", "event_time"),
    )


class ReceivedRow(AnalysisBase):
    """An envelope analysis has consumed (and committed the effects of)."""

    __tablename__ = "analysis_received"

    envelope_id: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_analysis_received_received_at", "received_at"),)


OUTBOX = outbox_table(AnalysisBase.metadata, "analysis")
