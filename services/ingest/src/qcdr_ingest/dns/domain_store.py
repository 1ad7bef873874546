"""The listed domains in PostgreSQL, and the read-only view other services query.

``intel_domains`` holds one row per listed name (canonical: lowercase, IDNA, no trailing dot) with
the feeds and categories listing it; the intel scheduler rewrites it after a refresh round when
the domain set changed. **The view for other services** (analysis matches DNS queries against it)::

    ingest_intel_domains(domain text, feeds text[], categories text[])

    SELECT domain, feeds, categories FROM ingest_intel_domains WHERE domain = ANY($names)

A listed name also covers every name under it: a reader asks for the query name and its parents
down to (not including) the public suffix, and the most specific hit wins.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Text, delete, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.dns.domains import DomainIndicators

VIEW = "ingest_intel_domains"
_CHUNK = 5000


class DomainRow(IngestBase):
    __tablename__ = "intel_domains"

    domain: Mapped[str] = mapped_column(Text, primary_key=True)
    feeds: Mapped[list[str]] = mapped_column(ARRAY(Text))
    categories: Mapped[list[str]] = mapped_column(ARRAY(Text))


def rows_of(domains: DomainIndicators) -> list[dict[str, object]]:
    return [
        {
            "domain": name,
            "feeds": sorted({item.feed for item in listings}),
            "categories": sorted({item.category for item in listings if item.category}),
        }
        for name, listings in sorted(domains.entries.items())
    ]


def content_hash(rows: list[dict[str, object]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr((row["domain"], row["feeds"], row["categories"])).encode())
    return digest.hexdigest()


async def stored_hash(session: AsyncSession) -> str:
    rows = (
        await session.execute(
            select(DomainRow.domain, DomainRow.feeds, DomainRow.categories).order_by(DomainRow.domain)
        )
    ).all()
    return content_hash([{"domain": d, "feeds": list(f), "categories": list(c)} for d, f, c in rows])


async def replace_domains(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    """Replace the whole set (flushed, not committed: the caller's transaction)."""
    await session.execute(delete(DomainRow))
    for start in range(0, len(rows), _CHUNK):
        await session.execute(insert(DomainRow), rows[start : start + _CHUNK])
