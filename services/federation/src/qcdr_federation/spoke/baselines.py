"""Sharing behavioural baselines through the hub, every ``baseline_sync_s``.

Up: the ready profiles local analysis publishes in the read-only view ``analysis_shared_profiles``
(profile_key = image digest, generation, ready_at, data), each once per generation. Down: the
other clusters' baselines after the stored cursor, each enqueued as ``federation.baseline_shared``
on ``federation:baselines`` in the same transaction as the cursor moves, for local analysis to
take (new workloads of a known image start warm). Without the view (analysis not migrated yet)
nothing goes up, and the heartbeat says so.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from qcdr_common.contracts.federation.v1 import (
    BASELINE_SHARED,
    BASELINES_STREAM,
    BaselineUpload,
    SharedBaseline,
)
from qcdr_common.logging import get_logger
from qcdr_common.streams.envelope import new_envelope
from qcdr_common.streams.outbox import enqueue
from sqlalchemy import column, select, table, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import BigInteger, DateTime, Text

from qcdr_federation.backoff import Backoff, StoppedError, sleep_unless_stopped, unless_stopped
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import HubClient, HubError, HubErrorKind
from qcdr_federation.spoke.models import SpokeBaselineRow
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import BASELINES_VIEW, AgentState, utcnow

log = get_logger(__name__)

VIEW = "analysis_shared_profiles"
UPLOAD_BATCH = 500  # BaselineUpload's limit
UPLOAD_BYTES = 4 * 1024 * 1024  # well under the hub's body limit (QCDR_FEDERATION_FORWARD_MAX_BYTES)
FETCH_LIMIT = 200
SOURCE = "federation"
_PROFILE_KEY = re.compile(r"sha256:[0-9a-f]{64}")

# analysis's view, read only (analysis owns it); columns as analysis publishes them
shared_profiles = table(
    VIEW,
    column("profile_key", Text),
    column("generation", BigInteger),
    column("ready_at", DateTime(timezone=True)),
    column("data", JSONB),
    column("updated_at", DateTime(timezone=True)),
)


async def view_exists(session: AsyncSession) -> bool:
    found = await session.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": VIEW})
    return bool(found)


async def profiles_to_upload(
    session: AsyncSession, limit: int
) -> list[tuple[str, int, datetime | None, Any]]:
    """Ready profiles never uploaded, or uploaded at an older generation."""
    p = shared_profiles
    b = SpokeBaselineRow.__table__
    stmt = (
        select(p.c.profile_key, p.c.generation, p.c.ready_at, p.c.data)
        .select_from(p.outerjoin(b, b.c.profile_key == p.c.profile_key))
        .where((b.c.profile_key.is_(None)) | (p.c.generation > b.c.generation))
        .order_by(p.c.profile_key)
        .limit(limit)
    )
    return [(r[0], int(r[1]), r[2], r[3]) for r in (await session.execute(stmt)).all()]


class BaselineSync:
    def __init__(
        self,
        settings: FederationSettings,
        sessions: async_sessionmaker[AsyncSession],
        client: HubClient,
        registrar: Registrar,
        state: AgentState,
        notify: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client
        self.registrar = registrar
        self.state = state
        self.notify = notify
        self._skipped: set[str] = set()  # profile keys not shareable (logged once each)

    async def upload(self) -> int:
        """Upload what is new in the view; returns how many profiles went up."""
        total = 0
        while True:
            async with self.sessions() as session:
                if not await view_exists(session):
                    if BASELINES_VIEW not in self.state.problems:
                        log.warning(
                            "federation_baselines_view_missing",
                            view=VIEW,
                            hint="analysis migrations not run?",
                        )
                    self.state.set_problem(
                        BASELINES_VIEW, f"baselines not shared: view {VIEW} missing (analysis not migrated?)"
                    )
                    return total
                self.state.clear_problem(BASELINES_VIEW)
                rows = await profiles_to_upload(session, UPLOAD_BATCH)
            for chunk, keys in self._chunks(rows):
                if chunk and not await self._upload(chunk):
                    chunk = []  # refused as such: settled all the same, so it does not block the rest
                # recorded per chunk: a failure later on re-sends only what did not go up
                async with self.sessions() as session:
                    await repo.record_uploaded(session, keys, utcnow())
                    await session.commit()
                total += len(chunk)
                self.state.counts["baselines_uploaded"] += len(chunk)
            if len(rows) < UPLOAD_BATCH:
                return total

    async def _upload(self, chunk: list[SharedBaseline]) -> bool:
        """True when the hub took the upload, False when it refused it (a 4xx: retrying the same
        profiles would fail the same way). Raises HubError when the hub is away or failing."""
        try:
            await self.client.upload_baselines(BaselineUpload(baselines=chunk))
        except HubError as exc:
            if exc.kind is not HubErrorKind.CLIENT:
                raise
            self.registrar.failed(exc)
            log.warning(
                "federation_baselines_refused",
                count=len(chunk),
                first=chunk[0].profile_key,
                error=exc.describe(),
            )
            return False
        self.state.contact_ok()
        return True

    def _chunks(
        self, rows: list[tuple[str, int, datetime | None, Any]]
    ) -> Iterator[tuple[list[SharedBaseline], list[tuple[str, int]]]]:
        """Uploads of at most ``UPLOAD_BATCH`` profiles and about ``UPLOAD_BYTES`` of JSON (the hub
        refuses bodies past its limit), with the keys each one settles (unshareable ones included:
        they are not tried again until their generation changes)."""
        chunk: list[SharedBaseline] = []
        keys: list[tuple[str, int]] = []
        size = 0
        for key, generation, ready_at, data in rows:
            keys.append((key, generation))
            if not _PROFILE_KEY.fullmatch(key) or not isinstance(data, dict) or generation < 0:
                if key not in self._skipped:
                    self._skipped.add(key)
                    log.warning("federation_baseline_not_shareable", profile_key=key[:100])
                continue
            baseline = SharedBaseline(
                profile_key=key,
                source_cluster=self.state.cluster_name,
                generation=generation,
                ready_at=ready_at,
                data=data,
            )
            weight = len(baseline.model_dump_json())
            if chunk and size + weight > UPLOAD_BYTES:
                yield chunk, keys[:-1]
                chunk, keys, size = [], keys[-1:], 0
            chunk.append(baseline)
            size += weight
        if keys:
            yield chunk, keys

    async def fetch(self) -> int:
        """Take the other clusters' new baselines into the outbox; returns how many."""
        total = 0
        async with self.sessions() as session:
            row = await repo.get_state(session)
        cursor = row.baselines_cursor if row is not None else None
        while True:
            page = await self.client.fetch_baselines(cursor, FETCH_LIMIT)
            self.state.contact_ok()
            next_cursor = page.next if page.next is not None else cursor
            if not page.items and next_cursor == cursor:
                return total
            now = utcnow()
            envelopes = [
                new_envelope(
                    BASELINE_SHARED, b, source=SOURCE, cluster_id=self.settings.cluster_id, occurred_at=now
                )
                for b in page.items
                if b.source_cluster
                != self.state.cluster_name  # the hub filters; a renamed spoke might not be
            ]
            async with self.sessions() as session:
                # replicas fetch on their own: one whose page another replica already took (the
                # stored cursor moved on meanwhile) carries on from there, instead of publishing
                # the page twice and moving the cursor back
                state = await repo.get_state(session, for_update=True)
                stored = state.baselines_cursor if state is not None else None
                if stored != cursor:
                    await session.rollback()
                    cursor = stored
                    continue
                await enqueue(session, OUTBOX, BASELINES_STREAM, envelopes)
                await repo.set_baselines_cursor(session, next_cursor)
                await session.commit()
            if envelopes:
                self.notify()
            total += len(envelopes)
            self.state.counts["baselines_received"] += len(envelopes)
            more = page.more if page.more is not None else len(page.items) >= FETCH_LIMIT
            if more and next_cursor == cursor:
                # asked again, the hub would hand out the same page for ever: this page is taken,
                # the fetch ends, and the next sync asks again
                self._cursor_stuck(cursor, len(page.items))
                return total
            cursor = next_cursor
            if not more:
                return total

    def _cursor_stuck(self, cursor: str | None, items: int) -> None:
        error = HubError(
            HubErrorKind.SERVER,
            f"a baselines page of {items} after cursor {cursor!r:.40} says more follow"
            " but does not move the cursor",
            status=200,
        )
        self.registrar.failed(error)
        log.error("federation_baselines_cursor_stuck", error=error.describe())

    async def sync_once(self) -> tuple[int, int]:
        return await self.upload(), await self.fetch()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.retry_max_s)
        while not stop.is_set():
            if not await self.registrar.wait_ready(stop):
                return
            try:
                up, down = await unless_stopped(self.sync_once(), stop)
                backoff.reset()
                if up or down:
                    log.info("federation_baselines_synced", uploaded=up, received=down)
                delay = self.settings.baseline_sync_s
            except StoppedError:
                return
            except HubError as exc:
                self.registrar.failed(exc)
                log.warning("federation_baselines_sync_failed", error=exc.describe())
                delay = min(self.settings.baseline_sync_s, backoff.next_delay())
            except Exception as exc:
                log.exception("federation_baselines_sync_error", error=repr(exc))
                delay = min(self.settings.baseline_sync_s, backoff.next_delay())
            if await sleep_unless_stopped(stop, delay):
                return
