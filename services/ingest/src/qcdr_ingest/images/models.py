"""``ingest_images``: one row per image (by sha256), written only by the CS images poller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, SmallInteger, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase


class ImageRow(IngestBase):
    __tablename__ = "ingest_images"

    image_key: Mapped[str] = mapped_column(Text, primary_key=True, comment="sha256:<hex>")
    image_id: Mapped[str | None] = mapped_column(Text)
    names: Mapped[list[str]] = mapped_column(ARRAY(Text), comment="registry/repository:tag")
    digests: Mapped[list[str]] = mapped_column(ARRAY(Text), comment="sha256:<hex>, own and repo digests")
    scanned: Mapped[bool] = mapped_column(Boolean)
    max_severity: Mapped[int | None] = mapped_column(SmallInteger, comment="Qualys 1..5; null: none")
    vulnerabilities: Mapped[dict[str, Any]] = mapped_column(JSONB, comment='{"1": n, ..., "5": n}')
    last_scanned: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), comment="Last poll that listed it.")
