"""All SQL of the image-status cache (the caller commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_ingest.images.models import ImageRow
from qcdr_ingest.images.parse import ImageRecord

_CHUNK = 1000


async def upsert(session: AsyncSession, records: Sequence[ImageRecord], seen_at: datetime) -> int:
    for start in range(0, len(records), _CHUNK):
        rows = [
            {
                "image_key": r.image_key,
                "image_id": r.image_id,
                "names": list(r.names),
                "digests": list(r.digests),
                "scanned": r.scanned,
                "max_severity": r.max_severity,
                "vulnerabilities": r.vulnerabilities,
                "last_scanned": r.last_scanned,
                "last_seen": seen_at,
            }
            for r in records[start : start + _CHUNK]
        ]
        insert = pg_insert(ImageRow).values(rows)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=[ImageRow.image_key],
                set_={k: insert.excluded[k] for k in rows[0] if k != "image_key"},
            )
        )
    await session.flush()
    return len(records)


async def get(session: AsyncSession, image_key: str) -> ImageRow | None:
    return await session.scalar(select(ImageRow).where(ImageRow.image_key == image_key))
