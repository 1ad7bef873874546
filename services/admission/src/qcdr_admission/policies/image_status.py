"""The image-status cache: ingest's read-only view ``ingest_image_status`` read into memory every
``image_status_refresh_s`` (never on the request path) and looked up by digest or by name and tag.

Keys: ``sha256:<hex>`` digests, and normalised ``registry/repository:tag`` names (``nginx:1.25`` is
``docker.io/library/nginx:1.25``). A pinned reference is looked up by its digest only (the tag of
a pinned image says nothing); an unpinned one by name and tag. The dictionaries are replaced as a
whole, so a lookup sees either the old or the new snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from qcdr_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from qcdr_admission.policies.context import ImageStatus
from qcdr_admission.policies.images import InvalidImageReferenceError, parse_image
from qcdr_admission.policies.pause import pause

log = get_logger("qcdr.admission.images")

VIEW_QUERY = text("SELECT image_key, names, digests, scanned, max_severity FROM ingest_image_status")


def name_key(reference: str) -> str | None:
    """``registry/repository:tag`` of an unpinned reference (``latest`` when no tag)."""
    try:
        ref = parse_image(reference)
    except InvalidImageReferenceError:
        return None
    return f"{ref.name}:{ref.tag or 'latest'}"


class ImageStatusCache:
    def __init__(self) -> None:
        self._by_digest: dict[str, ImageStatus] = {}
        self._by_name: dict[str, ImageStatus] = {}
        self.loaded = False
        self.errors = 0

    def __len__(self) -> int:
        return len(self._by_digest) + len(self._by_name)

    def lookup(self, image: str) -> ImageStatus | None:
        try:
            ref = parse_image(image)
        except InvalidImageReferenceError:
            return None
        if ref.digest is not None:
            return self._by_digest.get(ref.digest.lower())
        return self._by_name.get(f"{ref.name}:{ref.tag or 'latest'}")

    def replace(self, rows: Iterable[Mapping[str, Any]]) -> None:
        by_digest: dict[str, ImageStatus] = {}
        by_name: dict[str, ImageStatus] = {}
        for row in rows:
            status = ImageStatus(str(row["image_key"]), bool(row["scanned"]), row["max_severity"])
            for digest in row["digests"] or ():
                by_digest[str(digest).lower()] = status
            for name in row["names"] or ():
                key = name_key(str(name))
                if key is not None:
                    # several scans of one tag: a scanned one wins over an unscanned one
                    old = by_name.get(key)
                    if old is None or (status.scanned and not old.scanned):
                        by_name[key] = status
        self._by_digest, self._by_name = by_digest, by_name
        self.loaded = True

    async def load(self, engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            rows = (await connection.execute(VIEW_QUERY)).mappings().all()
        self.replace(dict(r) for r in rows)

    async def run(self, engine: AsyncEngine, interval_s: float, stop: asyncio.Event | None = None) -> None:
        """Refresh until ``stop`` is set; on errors the last snapshot stays."""
        while stop is None or not stop.is_set():
            try:
                await self.load(engine)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.warning("admission_image_status_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
            if await pause(stop, interval_s):
                return
