"""Intel state in PostgreSQL: the services' :class:`FeedStateStore` and :class:`ReputationCache`.

Tables (owned by ingest, created by ``db/migrations/versions/0001_intel.py``):

- ``intel_feed_state``: one row per feed. ``body`` is the last good copy (NULL while the feed has
  never succeeded, and then ``fetched_at`` is NULL too); ``attempted_at``/``last_error`` describe the
  last attempt, good or bad.
- ``intel_reputation``: one AbuseIPDB answer per IP (``inet``, so ``2001:DB8::1`` and ``2001:db8::1``
  are one row).

Unit of work: the repositories only execute statements and flush; the stores are the edge and each
public method commits its own short transaction. They are called between network round trips (a
feed download, an AbuseIPDB batch), and a transaction held across those would pin a connection for
seconds; each call's write is complete on its own (one upsert), so nothing is lost by committing it
alone. Code that wants several writes in one transaction uses the repositories with its own session.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    TypeDecorator,
    case,
    select,
)
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.intel.model import FeedAttempt, Reputation, StoredFeed

# rows per statement: asyncpg allows 32,767 bind parameters; 1,000 rows x 9 columns stays well below
_CHUNK = 1000


class IPAddress(TypeDecorator[str]):
    """``inet`` read back as text whatever the driver does (asyncpg returns ``ipaddress`` objects)."""

    impl = INET
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


class FeedStateRow(IngestBase):
    __tablename__ = "intel_feed_state"
    __table_args__ = (CheckConstraint("(body IS NULL) = (fetched_at IS NULL)", name="body_has_fetched_at"),)

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text)  # where ``body`` came from (the attempted URL while there is none)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class ReputationRow(IngestBase):
    __tablename__ = "intel_reputation"
    __table_args__ = (CheckConstraint("score BETWEEN 0 AND 100", name="score_range"),)

    ip: Mapped[str] = mapped_column(IPAddress, primary_key=True)
    score: Mapped[int] = mapped_column(SmallInteger)
    total_reports: Mapped[int] = mapped_column(Integer)
    usage_type: Mapped[str | None] = mapped_column(Text)
    country_code: Mapped[str | None] = mapped_column(Text)
    is_whitelisted: Mapped[bool | None] = mapped_column(Boolean)
    is_tor: Mapped[bool | None] = mapped_column(Boolean)
    last_reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _canonical_ip(ip: str) -> str | None:
    try:
        return ipaddress.ip_address(ip.strip()).compressed
    except ValueError:
        return None


# ---------------------------------------------------------------------- repositories (flush only)


class FeedStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, name: str) -> FeedStateRow | None:
        query = select(FeedStateRow).where(FeedStateRow.name == name)
        return await self.session.scalar(query.execution_options(populate_existing=True))

    async def upsert(self, feed: StoredFeed) -> None:
        values = {
            "name": feed.name,
            "url": feed.url,
            "body": feed.body,
            "etag": feed.etag,
            "last_modified": feed.last_modified,
            "fetched_at": feed.fetched_at,
            "attempted_at": feed.attempted_at,
            "last_error": feed.last_error,
        }
        insert = pg_insert(FeedStateRow).values(values)
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[FeedStateRow.name],
                set_={key: insert.excluded[key] for key in values if key != "name"},
            )
        )
        await self.session.flush()

    async def record_failure(self, name: str, url: str, at: datetime, error: str) -> None:
        insert = pg_insert(FeedStateRow).values(name=name, url=url, attempted_at=at, last_error=error)
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[FeedStateRow.name],
                set_={
                    "attempted_at": insert.excluded.attempted_at,
                    "last_error": insert.excluded.last_error,
                    # the URL stays the body's origin; without a body it follows the attempts
                    "url": case((FeedStateRow.body.is_(None), insert.excluded.url), else_=FeedStateRow.url),
                },
            )
        )
        await self.session.flush()


class ReputationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_many(self, ips: Sequence[str]) -> list[ReputationRow]:
        """Rows for these IPs (which must be valid addresses)."""
        rows: list[ReputationRow] = []
        for start in range(0, len(ips), _CHUNK):
            query = select(ReputationRow).where(ReputationRow.ip.in_(ips[start : start + _CHUNK]))
            rows.extend(await self.session.scalars(query.execution_options(populate_existing=True)))
        return rows

    async def upsert_many(self, items: Sequence[Reputation]) -> None:
        """INSERT … ON CONFLICT DO UPDATE, keeping whichever answer was checked last."""
        for start in range(0, len(items), _CHUNK):
            rows = [
                {
                    "ip": item.ip,
                    "score": item.score,
                    "total_reports": item.total_reports,
                    "usage_type": item.usage_type,
                    "country_code": item.country_code,
                    "is_whitelisted": item.is_whitelisted,
                    "is_tor": item.is_tor,
                    "last_reported_at": item.last_reported_at,
                    "checked_at": item.checked_at,
                }
                for item in items[start : start + _CHUNK]
            ]
            insert = pg_insert(ReputationRow).values(rows)
            await self.session.execute(
                insert.on_conflict_do_update(
                    index_elements=[ReputationRow.ip],
                    set_={key: insert.excluded[key] for key in rows[0] if key != "ip"},
                    where=ReputationRow.checked_at <= insert.excluded.checked_at,
                )
            )
        await self.session.flush()


# ---------------------------------------------------------------------- stores (commit per call)


class PostgresFeedStateStore:
    """:class:`~qcdr_ingest.intel.model.FeedStateStore` on ``intel_feed_state``."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory

    async def load(self, name: str) -> StoredFeed | None:
        async with self._sessions() as session, session.begin():
            row = await FeedStateRepository(session).get(name)
        if row is None or row.body is None or row.fetched_at is None:
            return None
        return StoredFeed(
            name=row.name,
            url=row.url,
            body=row.body,
            etag=row.etag,
            last_modified=row.last_modified,
            fetched_at=row.fetched_at,
            attempted_at=row.attempted_at,
            last_error=row.last_error,
        )

    async def last_attempt(self, name: str) -> FeedAttempt | None:
        async with self._sessions() as session, session.begin():
            row = await FeedStateRepository(session).get(name)
        if row is None:
            return None
        return FeedAttempt(name=row.name, url=row.url, attempted_at=row.attempted_at, error=row.last_error)

    async def save(self, feed: StoredFeed) -> None:
        async with self._sessions() as session, session.begin():
            await FeedStateRepository(session).upsert(feed)

    async def record_failure(self, name: str, url: str, at: datetime, error: str) -> None:
        """Note the failed attempt; the last good body stays as it is."""
        async with self._sessions() as session, session.begin():
            await FeedStateRepository(session).record_failure(name, url, at, error)


class PostgresReputationCache:
    """:class:`~qcdr_ingest.intel.model.ReputationCache` on ``intel_reputation``.

    ``get_many`` answers under the caller's spelling of each IP (invalid ones are simply not found);
    ``put_many`` raises ValueError for an invalid IP and never replaces a newer answer by an older one.
    """

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory

    async def get_many(self, ips: list[str]) -> dict[str, Reputation]:
        asked: dict[str, list[str]] = {}
        for ip in ips:
            key = _canonical_ip(ip)
            if key is not None:
                asked.setdefault(key, []).append(ip)
        if not asked:
            return {}
        async with self._sessions() as session, session.begin():
            rows = await ReputationRepository(session).get_many(list(asked))
        found: dict[str, Reputation] = {}
        for row in rows:
            key = _canonical_ip(row.ip) or row.ip
            answer = Reputation(
                ip=key,
                score=row.score,
                total_reports=row.total_reports,
                usage_type=row.usage_type,
                country_code=row.country_code,
                is_whitelisted=row.is_whitelisted,
                is_tor=row.is_tor,
                last_reported_at=row.last_reported_at,
                checked_at=row.checked_at,
            )
            for original in asked.get(key, []):
                found[original] = answer
        return found

    async def put_many(self, items: list[Reputation]) -> None:
        latest: dict[str, Reputation] = {}
        for item in items:
            key = _canonical_ip(item.ip)
            if key is None:
                raise ValueError(f"not an IP address: {item.ip!r}")
            previous = latest.get(key)
            # one statement cannot update a row twice: keep the newest answer per IP
            if previous is None or item.checked_at >= previous.checked_at:
                latest[key] = item if item.ip == key else item.model_copy(update={"ip": key})
        if not latest:
            return
        async with self._sessions() as session, session.begin():
            await ReputationRepository(session).upsert_many(list(latest.values()))
