"""The image-status poller as a background worker: poll the Container Security images list now,
then every interval, in one replica at a time (an advisory lock) and once per interval whatever the
number of replicas (a cycle is skipped while the last poll is younger than that), storing into
``ingest_images`` (read by admission through the view ``ingest_image_status``)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from qcdr_common.logging import get_logger
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_ingest.images.client import CsImagesClient
from qcdr_ingest.images.models import ImageRow
from qcdr_ingest.images.poller import ImagesPollResult, poll_images
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.poller import RECENT_SHARE

log = get_logger(__name__)
LOCK_KEY = "qcdr-ingest-images"


class ImagesWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        qualys: QualysSettings,
        *,
        interval: timedelta,
        base_url: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.qualys = qualys
        self.interval = interval
        self.base_url = base_url

    async def poll_once(self) -> ImagesPollResult | None:
        """One cycle; None when another replica holds the lock or polled within the interval."""
        client = CsImagesClient(self.qualys, base_url=self.base_url)
        try:
            async with self.sessions.begin() as session:
                got = await session.scalar(
                    text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": LOCK_KEY}
                )
                if not got:
                    return None
                # the newest ``last_seen`` is the last successful poll (every poll stamps what it lists)
                last = await session.scalar(select(func.max(ImageRow.last_seen)))
                if last is not None and datetime.now(UTC) - last < self.interval * RECENT_SHARE:
                    return None
                return await poll_images(client, session)
        finally:
            await client.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("image status poller started", interval_s=self.interval.total_seconds())
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # the API or the database away: log, wait, try again
                log.error("image status poll failed", error=f"{type(exc).__name__}: {exc}"[:500])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())
        log.info("image status poller stopped")
