"""The services' indicator set in PostgreSQL, and the read-only view other services query.

Tables (owned by ingest, created by ``db/migrations/versions/0002_events.py``):

- ``intel_indicators``: the listed set as minimal CIDRs (every address some live feed lists,
  never-block ranges cut out), one row per CIDR with the feeds listing addresses inside it and the
  highest confidence among them (see :mod:`qcdr_ingest.intel.indicators`). GiST-indexed
  (``inet_ops``), so ``cidr >>= $ip`` is an index lookup.
- ``intel_indicator_state``: one row (``name = 'default'``): the indicator set with provenance
  (the serialized :class:`~qcdr_ingest.intel.indicators.IndicatorSet`, so listings survive
  restarts and expire after the TTL), a content hash of ``intel_indicators``, and the last
  refresh's per-feed outcome for ``GET /v1/intel/feeds``.

**The view for other services** (read-only; analysis matches event destinations against it)::

    ingest_intel_listed(cidr cidr, feeds text[], confidence int)

    SELECT feeds, confidence FROM ingest_intel_listed WHERE cidr >>= '203.0.113.7'::inet

``cidr`` is canonical (no host bits; IPv4-mapped IPv6 addresses are stored as IPv4), ``feeds``
sorted feed names, ``confidence`` ≥ 1 (the number of live listings; an aggregate such as IPsum
counts its own blocklists). When the set changes, ingest publishes ``ingest.intel_changed`` on
``ingest:intel`` after the new rows are committed, so a reader that caches the set reloads then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from qcdr_common.db import driver_connection
from sqlalchemy import DateTime, Index, Integer, LargeBinary, Text, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY, CIDR, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.intel.indicators import CidrEntry

VIEW = "ingest_intel_listed"
STATE_NAME = "default"


class IndicatorRow(IngestBase):
    __tablename__ = "intel_indicators"
    __table_args__ = (
        Index(
            "ix_intel_indicators_cidr_gist",
            "cidr",
            postgresql_using="gist",
            postgresql_ops={"cidr": "inet_ops"},
        ),
    )

    cidr: Mapped[str] = mapped_column(CIDR, primary_key=True)
    feeds: Mapped[list[str]] = mapped_column(ARRAY(Text))
    confidence: Mapped[int] = mapped_column(Integer)


class IntelStateRow(IngestBase):
    __tablename__ = "intel_indicator_state"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    indicators: Mapped[bytes] = mapped_column(LargeBinary)  # IndicatorSet.to_json()
    content_hash: Mapped[str] = mapped_column(Text)  # sha256 of the intel_indicators rows
    cidrs: Mapped[int] = mapped_column(Integer)
    feeds: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)  # the last refresh, per feed
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


async def load_state(session: AsyncSession) -> IntelStateRow | None:
    query = select(IntelStateRow).where(IntelStateRow.name == STATE_NAME)
    return await session.scalar(query.execution_options(populate_existing=True))


async def save_state(session: AsyncSession, **values: Any) -> None:
    values = {"name": STATE_NAME, **values}
    insert = pg_insert(IntelStateRow).values(values)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[IntelStateRow.name],
            set_={key: insert.excluded[key] for key in values if key != "name"},
        )
    )
    await session.flush()


async def listed_cidrs(session: AsyncSession) -> set[str]:
    return {str(c) for c in (await session.scalars(select(IndicatorRow.cidr))).all()}


async def replace_indicators(session: AsyncSession, entries: Sequence[CidrEntry]) -> None:
    """The whole set replaced in the caller's transaction (readers see the old set until commit)."""
    await session.execute(delete(IndicatorRow))
    if entries:
        connection = await driver_connection(session)
        await connection.copy_records_to_table(
            IndicatorRow.__tablename__,
            records=[(cidr, list(feeds), confidence) for cidr, feeds, confidence in entries],
            columns=("cidr", "feeds", "confidence"),
        )
    await session.flush()


async def lookup(session: AsyncSession, ip: str) -> list[tuple[str, list[str], int]]:
    """The listed CIDRs containing ``ip`` (a valid address), most specific first."""
    rows = await session.execute(
        text(
            "SELECT cidr::text, feeds, confidence FROM ingest_intel_listed WHERE cidr >>= CAST(:ip AS inet)"
            " ORDER BY masklen(cidr) DESC"
        ),
        {"ip": ip},
    )
    return [(str(c), list(f), int(n)) for c, f, n in rows.all()]
