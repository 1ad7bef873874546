"""The threat-intel scheduler: refresh the feeds on an interval, rebuild the indicator set, store it,
and announce a change.

A refresh fetches every configured feed with :class:`~qcdr_ingest.intel.fetch.FeedFetcher` over
:class:`~qcdr_ingest.intel.state_postgres.PostgresFeedStateStore` (conditional GETs, minimum
intervals, last good copies), merges the snapshots into the stored
:class:`~qcdr_ingest.intel.indicators.IndicatorSet` (provenance and TTL survive restarts), and
computes the listed set: every address a live feed lists, minus the never-block ranges, as minimal
CIDRs. When that set differs from the stored one (a content hash), ``intel_indicators`` is replaced
and an ``ingest.intel_changed`` envelope is written to the outbox **in the same transaction**, so the
announcement goes out exactly when readers of ``ingest_intel_listed`` can see the new set.
Parsing and aggregation run in a worker thread: a large feed set takes seconds of CPU, and the
event loop keeps serving the API meanwhile. One replica refreshes at a time (an advisory lock), and
every replica runs the loop: a round some replica already refreshed (within 90 % of the interval,
with the feeds configured now) is skipped, so the feeds are parsed and merged once per interval,
not once per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from qcdr_common.logging import get_logger, redact_url
from qcdr_common.streams import enqueue, new_envelope
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qcdr_ingest.db.locks import singleton
from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.dns import domain_store
from qcdr_ingest.dns.domains import DOMAIN_FORMATS, from_stored_feeds
from qcdr_ingest.intel import indicator_store
from qcdr_ingest.intel.fetch import FeedFetcher, FeedResult
from qcdr_ingest.intel.indicators import CidrEntry, IndicatorSet
from qcdr_ingest.intel.merge import merge_round
from qcdr_ingest.intel.model import FeedSpec
from qcdr_ingest.intel.netsets import NeverBlock
from qcdr_ingest.intel.schemas import FeedStatusRead, IntelChanged
from qcdr_ingest.intel.state_postgres import PostgresFeedStateStore
from qcdr_ingest.streams import INTEL, INTEL_CHANGED

log = get_logger(__name__)


# the loop skips a round when some replica refreshed within this share of the interval
ROUND_SHARE = 0.9


def utc_now() -> datetime:
    return datetime.now(UTC)


def content_hash(entries: Sequence[CidrEntry]) -> str:
    digest = hashlib.sha256()
    for cidr, feeds, confidence in entries:
        digest.update(f"{cidr}\t{','.join(feeds)}\t{confidence}\n".encode())
    return digest.hexdigest()


@dataclass
class RefreshResult:
    changed: bool = False
    skipped: bool = False  # another replica holds the lock, or refreshed this round
    cidrs: int = 0
    added: int = 0
    removed: int = 0
    expired: int = 0
    content_hash: str = ""
    feeds: list[FeedStatusRead] = field(default_factory=list)


@dataclass
class _Built:
    indicators: bytes
    entries: list[CidrEntry]
    feeds: list[FeedStatusRead]
    expired: int


class IntelScheduler:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        specs: Sequence[FeedSpec],
        *,
        interval: timedelta,
        ttl: timedelta,
        never_block: Sequence[str] = (),
        cluster_id: str,
        service_name: str = "ingest",
        notify: Callable[[], None] | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self.specs = list(specs)
        self.interval = interval
        self._ttl = ttl
        self._never_block = NeverBlock.build(never_block)
        self._cluster = cluster_id
        self._service = service_name
        self._notify = notify
        self._http = http
        self._clock = clock

    async def refresh(self, *, unless_refreshed_within: timedelta | None = None) -> RefreshResult:
        """One refresh, unless another replica is refreshing; with ``unless_refreshed_within``, not
        when some replica refreshed that recently with the feeds configured here either."""
        async with singleton(self._engine, "qcdr-ingest:intel-refresh") as held:
            if not held:
                return RefreshResult(skipped=True)
            if unless_refreshed_within is not None and await self._refreshed_since(
                self._clock() - unless_refreshed_within
            ):
                return RefreshResult(skipped=True)
            return await self._refresh()

    async def _refreshed_since(self, since: datetime) -> bool:
        async with self._sessions() as session:
            state = await indicator_store.load_state(session)
        if state is None or state.refreshed_at < since:
            return False
        # a feed added or removed since (a replica with the new configuration): refresh now
        return {feed.get("name") for feed in state.feeds} == {spec.name for spec in self.specs}

    async def _refresh_domains(self) -> None:
        """Rewrite the listed domains from the feed copies this round stored, when they changed."""
        if not any(spec.format in DOMAIN_FORMATS for spec in self.specs):
            return
        domains = await from_stored_feeds(self.specs, PostgresFeedStateStore(self._sessions))
        rows = domain_store.rows_of(domains)
        async with self._sessions() as session:
            if domain_store.content_hash(rows) == await domain_store.stored_hash(session):
                return
            await domain_store.replace_domains(session, rows)
            await session.commit()
        log.info("listed domains refreshed", domains=len(rows))

    async def _refresh(self) -> RefreshResult:
        now = self._clock()
        async with self._sessions() as session:
            state = await indicator_store.load_state(session)
            saved = bytes(state.indicators) if state is not None else None
            previous_hash = state.content_hash if state is not None else None
        async with FeedFetcher(
            PostgresFeedStateStore(self._sessions), http=self._http, clock=self._clock
        ) as f:
            results = await f.fetch_all(self.specs)
        built = await asyncio.to_thread(self._build, saved, results, now)
        new_hash = content_hash(built.entries)
        result = RefreshResult(
            cidrs=len(built.entries), expired=built.expired, content_hash=new_hash, feeds=built.feeds
        )
        async with self._sessions() as session:
            changed_at = state.changed_at if state is not None else None
            if new_hash != previous_hash:
                before = await indicator_store.listed_cidrs(session)
                after = {entry.cidr for entry in built.entries}
                await indicator_store.replace_indicators(session, built.entries)
                result.changed, result.added, result.removed = True, len(after - before), len(before - after)
                changed_at = now
                payload = IntelChanged(
                    content_hash=new_hash,
                    previous_hash=previous_hash,
                    cidrs=len(built.entries),
                    added=result.added,
                    removed=result.removed,
                    changed_at=now,
                    feeds=built.feeds,
                )
                envelope = new_envelope(
                    INTEL_CHANGED, payload, source=self._service, cluster_id=self._cluster, occurred_at=now
                )
                await enqueue(session, OUTBOX, INTEL, [envelope])
            await indicator_store.save_state(
                session,
                indicators=built.indicators,
                content_hash=new_hash,
                cidrs=len(built.entries),
                feeds=[feed.model_dump(mode="json") for feed in built.feeds],
                refreshed_at=now,
                changed_at=changed_at,
            )
            await session.commit()
        await self._refresh_domains()
        if result.changed and self._notify is not None:
            self._notify()
        log.info(
            "intel refreshed",
            changed=result.changed,
            cidrs=result.cidrs,
            added=result.added,
            removed=result.removed,
            expired=result.expired,
        )
        return result

    def _build(self, saved: bytes | None, results: list[FeedResult], now: datetime) -> _Built:
        """CPU work, in a thread: parse the feeds, merge them, expire, aggregate."""
        indicators = (
            IndicatorSet.from_json(saved, self._never_block) if saved else IndicatorSet(self._never_block)
        )
        parsed_feeds, expired = merge_round(
            indicators, results, configured=(spec.name for spec in self.specs), now=now, ttl=self._ttl
        )
        feeds = [
            FeedStatusRead(
                name=item.name,
                category=item.spec.category,
                url=redact_url(item.spec.url),
                status=item.status.value,
                fetched_at=item.fetched_at,
                checked_at=item.checked_at or now,
                ips=parsed.ips if parsed else 0,
                cidrs=parsed.cidrs if parsed else 0,
                garbage=parsed.garbage if parsed else 0,
                error=item.error,
                warnings=list(item.warnings),
            )
            for item, parsed in zip(results, parsed_feeds, strict=True)
        ]
        entries = indicators.blocklist().cidrs
        return _Built(indicators.to_json(), entries, feeds, expired)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh now, then every interval, until ``stop``; a failing refresh never ends the loop."""
        log.info("intel scheduler started", feeds=len(self.specs), interval_s=self.interval.total_seconds())
        while not stop.is_set():
            try:
                await self.refresh(unless_refreshed_within=self.interval * ROUND_SHARE)
            except Exception as exc:
                log.error("intel refresh crashed", error=f"{type(exc).__name__}: {exc}"[:500])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())
        log.info("intel scheduler stopped")
