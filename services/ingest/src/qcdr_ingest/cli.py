"""``qcdr-ingest``: ``serve`` (the HTTP API), ``consume`` (the background workers without HTTP),
``replay`` (re-publish stored events) and ``db upgrade``, through the shared command skeleton.

Exit codes: 0 done, 1 failed (the message says why, on one line), 2 bad usage.
"""

from __future__ import annotations

from datetime import datetime

from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.logging import get_logger
from qcdr_common.service_cli import make_service_cli
from qcdr_common.streams import publish_fields, run_until_stopped, stream_key
from redis.asyncio import Redis

from qcdr_ingest.db import upgrade
from qcdr_ingest.events import repository, service
from qcdr_ingest.settings import IngestSettings, get_qualys_settings, get_settings
from qcdr_ingest.streams import EVENT_OBSERVED, EVENTS
from qcdr_ingest.workers import build_workers

log = get_logger(__name__)


async def consume() -> None:
    """The outbox relay always; the Qualys CDR poller when QUALYS_* credentials are set; the
    threat-intel scheduler when QCDR_INTEL_ENABLED=true. Until SIGTERM."""
    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        workers = build_workers(settings, get_qualys_settings(), engine, redis, make_session_factory(engine))
        log.info("ingest consume started", workers=workers.describe())
        await run_until_stopped(*workers.runners())
    finally:
        await redis.aclose()
        await engine.dispose()


async def replay_events(
    settings: IngestSettings, filters: repository.EventFilter, *, dry_run: bool = False
) -> int:
    """Publish the matching stored events to ``ingest:events`` (oldest first), each under the
    envelope id it was first announced with; returns how many. Not through the outbox: nothing
    changes state, and the original outbox rows may have been purged long ago."""
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    key = stream_key(settings.redis_prefix, EVENTS)
    total = 0
    try:
        async with make_session_factory(engine)() as session:
            async for rows in repository.iter_events(session, filters):
                entries = []
                for row in rows:
                    _, data = service.replay_record(
                        row.id,
                        row.payload,
                        row.event_time,
                        row.received_at,
                        row.cluster or settings.cluster_id,
                        service=settings.service_name,
                    )
                    entries.append((key, {b"type": EVENT_OBSERVED.encode(), b"data": data}))
                if not dry_run:
                    await publish_fields(redis, entries, settings.stream_maxlen)
                total += len(entries)
    finally:
        await redis.aclose()
        await engine.dispose()
    return total


async def replay(since: datetime | None) -> int:
    """``qcdr-ingest replay [--since T]``: every event stored (received) at or after ``since``,
    i.e. what a trimmed or lost stream was missing, oldest event first."""
    return await replay_events(get_settings(), repository.EventFilter(received_since=since))


cli = make_service_cli(
    "ingest",
    "qcdr_ingest.app:create_app",
    get_settings,
    db_upgrade=upgrade,
    consume=consume,
    replay=replay,
)
