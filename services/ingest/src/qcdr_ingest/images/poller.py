"""One poll of the CS images: fetch every page, parse, upsert (de-duplicated by sha)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_ingest.images import repository as repo
from qcdr_ingest.images.client import CsImagesClient
from qcdr_ingest.images.parse import ImageRecord, MalformedImageError, parse_image

log = get_logger("qcdr.ingest.images")


@dataclass(frozen=True, slots=True)
class ImagesPollResult:
    fetched: int
    stored: int
    malformed: int
    pages: int
    retries: int


async def poll_images(
    client: CsImagesClient, session: AsyncSession, *, now: datetime | None = None
) -> ImagesPollResult:
    fetch = await client.fetch_all()
    records: dict[str, ImageRecord] = {}
    malformed = 0
    for item in fetch.items:
        try:
            record = parse_image(item)
        except MalformedImageError:
            malformed += 1
            continue
        records[record.image_key] = record  # a later page's copy wins
    stored = await repo.upsert(session, list(records.values()), now or datetime.now(UTC))
    result = ImagesPollResult(len(fetch.items), stored, malformed, fetch.pages, fetch.retries)
    log.info(
        "ingest_images_polled",
        fetched=result.fetched,
        stored=result.stored,
        malformed=result.malformed,
        pages=result.pages,
        retries=result.retries,
    )
    return result
