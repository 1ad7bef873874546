"""``ingest_watermarks``: how far each poller has read, kept in PostgreSQL.

One row per poller (``qualys-cdr``). The watermark moves in the same transaction as the events
read up to it, so a crash never leaves it ahead of what was stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Text, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase


class WatermarkRow(IngestBase):
    __tablename__ = "ingest_watermarks"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    watermark: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the last cycle's counts and warnings


async def get_watermark(session: AsyncSession, name: str) -> WatermarkRow | None:
    query = select(WatermarkRow).where(WatermarkRow.name == name)
    return await session.scalar(query.execution_options(populate_existing=True))


async def set_watermark(
    session: AsyncSession, name: str, watermark: datetime, updated_at: datetime, details: dict[str, Any]
) -> None:
    values = {"name": name, "watermark": watermark, "updated_at": updated_at, "details": details}
    insert = pg_insert(WatermarkRow).values(values)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[WatermarkRow.name],
            set_={key: insert.excluded[key] for key in values if key != "name"},
        )
    )
    await session.flush()
