"""``ingest_events``: every event stored once, keyed by its source-stable id (the idempotency key).

``payload`` is the SecurityEvent JSON as published; the other columns are copies of its fields
for filtering. ``received_at`` is cut to whole milliseconds: the envelope id of an event is derived
from it (see :func:`qcdr_ingest.events.service.envelope_id`), and a replay must derive the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase


class EventRow(IngestBase):
    __tablename__ = "ingest_events"
    __table_args__ = (
        # newest-first pages and time-range reads (GET /v1/events, replay); the id breaks ties
        Index("ix_ingest_events_event_time_id", "event_time", "id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cluster: Mapped[str | None] = mapped_column(Text)
    namespace: Mapped[str | None] = mapped_column(Text)
    pod: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
