"""``qcdr-ingest``: ``serve`` (the HTTP API), ``consume`` (the background workers without HTTP),
``replay`` (re-publish stored events) and ``db upgrade``.

Exit codes: 0 done, 1 failed (the message says why, on one line), 2 bad usage.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import typer
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.logging import configure_logging, get_logger, redact_url
from qcdr_common.service_cli import make_service_cli
from qcdr_common.streams import publish_fields, run_until_stopped, stream_key
from redis.asyncio import Redis

from qcdr_ingest.db import upgrade
from qcdr_ingest.events import repository, service
from qcdr_ingest.intel.feeds import parse_duration
from qcdr_ingest.settings import IngestSettings, get_qualys_settings, get_settings
from qcdr_ingest.streams import EVENT_OBSERVED, EVENTS
from qcdr_ingest.workers import build_workers

log = get_logger(__name__)

cli = make_service_cli("ingest", "qcdr_ingest.app:create_app", get_settings, db_upgrade=upgrade)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"qcdr-ingest: {redact_url(' '.join(message.split()))[:500]}", err=True)
    return typer.Exit(1)


@cli.command()
def consume() -> None:
    """Run the background workers without HTTP, until SIGTERM.

    The outbox relay always; the Qualys CDR poller when QUALYS_* credentials are set; the
    threat-intel scheduler when QCDR_INTEL_ENABLED=true.
    """
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format.value)

    async def main() -> None:
        engine = make_engine(settings.database_url.get_secret_value())
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        try:
            workers = build_workers(
                settings, get_qualys_settings(), engine, redis, make_session_factory(engine)
            )
            log.info("ingest consume started", workers=workers.describe())
            await run_until_stopped(*workers.runners())
        finally:
            await redis.aclose()
            await engine.dispose()

    try:
        asyncio.run(main())
    except Exception as exc:
        raise _fail(f"consume failed: {type(exc).__name__}: {exc}") from None


def _moment(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"not ISO 8601: {value!r}", param_hint=option) from None
    if moment.utcoffset() is None:
        raise typer.BadParameter("needs a time zone, e.g. 2026-01-31T00:00:00Z", param_hint=option)
    return moment


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


@cli.command()
def replay(
    since: str = typer.Option(None, help="Event time from (ISO 8601 with zone)."),
    until: str = typer.Option(None, help="Event time before (ISO 8601 with zone); default now."),
    last: str = typer.Option(None, help="Instead of --since: this far back, e.g. 30m, 24h, 7d."),
    source: list[str] = typer.Option([], help="Only these sources (repeatable)."),  # noqa: B008
    dry_run: bool = typer.Option(False, "--dry-run", help="Count, publish nothing."),
) -> None:
    """Re-publish stored events to ingest:events, by event time.

    For a stream that was trimmed or a consumer that lost its state. Each event goes out under
    its original envelope id, so a consumer that already handled it recognises the duplicate.
    """
    if (since is None) == (last is None):
        raise typer.BadParameter("give exactly one of --since and --last")
    start = _moment(since, "--since") if since is not None else datetime.now(UTC) - parse_duration(last)
    end = _moment(until, "--until") if until is not None else None
    filters = repository.EventFilter(since=start, until=end, sources=tuple(source))
    settings = get_settings()
    try:
        count = asyncio.run(replay_events(settings, filters, dry_run=dry_run))
    except Exception as exc:
        raise _fail(f"replay failed: {type(exc).__name__}: {exc}") from None
    verb = "would re-publish" if dry_run else "re-published"
    typer.echo(f"qcdr-ingest: {verb} {count} events to {stream_key(settings.redis_prefix, EVENTS)}")
