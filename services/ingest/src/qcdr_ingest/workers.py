"""The ingest service's background work, shared by ``serve`` (the app's lifespan) and ``consume``:

- the outbox relay: publishes ``ingest_outbox`` rows to ``ingest:events`` and ``ingest:intel``;
- retention: deletes events older than ``QCDR_EVENTS_RETENTION_S`` and old published outbox rows;
- the Qualys CDR poller, when Qualys credentials are configured (``QUALYS_*``);
- the threat-intel scheduler, when ``QCDR_INTEL_ENABLED`` is true;
- the Hubble Relay collector, when ``QCDR_HUBBLE_RELAY_ADDRESS`` is set (one replica at a time);
- the AbuseIPDB reputation worker, when ``ABUSEIPDB_API_KEY`` is set (``QCDR_REPUTATION_ENABLED``).

The poller and the scheduler take an advisory lock per cycle, and relays claim rows with
``SKIP LOCKED``, so any number of replicas may run them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from qcdr_common.retention import AgeRule, OutboxRule, RetentionLoop, Rule
from qcdr_common.streams import OutboxRelay
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.events.registry import load_adapters
from qcdr_ingest.hubble.collector import HubbleCollector
from qcdr_ingest.hubble.relay import RelayTarget
from qcdr_ingest.images.worker import ImagesWorker
from qcdr_ingest.intel.abuseipdb import AbuseIPDBSettings, ReputationChecker
from qcdr_ingest.intel.feeds import DEFAULT_FEEDS, load_feeds
from qcdr_ingest.intel.model import FeedSpec
from qcdr_ingest.intel.reputation_queue import ReputationWorker, reputation_freshness
from qcdr_ingest.intel.scheduler import IntelScheduler
from qcdr_ingest.intel.state_postgres import PostgresReputationCache
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.poller import CdrPoller
from qcdr_ingest.settings import IngestSettings

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Workers:
    relay: OutboxRelay
    retention: RetentionLoop | None = None
    poller: CdrPoller | None = None
    scheduler: IntelScheduler | None = None
    images: ImagesWorker | None = None
    hubble: HubbleCollector | None = None
    reputation: ReputationWorker | None = None

    def runners(self) -> list[Worker]:
        found: list[Worker] = [self.relay.run]
        if self.retention is not None:
            found.append(self.retention.run)
        if self.poller is not None:
            found.append(self.poller.run)
        if self.images is not None:
            found.append(self.images.run)
        if self.scheduler is not None:
            found.append(self.scheduler.run)
        if self.hubble is not None:
            found.append(self.hubble.run)
        if self.reputation is not None:
            found.append(self.reputation.run)
        return found

    def describe(self) -> list[str]:
        names = ["outbox relay"]
        if self.retention is not None:
            names.append("retention")
        if self.poller is not None:
            names.append("qualys poller")
        if self.images is not None:
            names.append("image status poller")
        if self.scheduler is not None:
            names.append(f"intel scheduler ({len(self.scheduler.specs)} feeds)")
        if self.hubble is not None:
            names.append(f"hubble relay collector ({self.hubble.target.address})")
        if self.reputation is not None:
            names.append("abuseipdb reputation worker")
        return names


def retention_rules(settings: IngestSettings) -> list[Rule]:
    """Events older than ``QCDR_EVENTS_RETENTION_S`` (by event time) and published outbox rows."""
    return [
        AgeRule("ingest_events", "event_time", settings.events_retention_s),
        OutboxRule(OUTBOX, settings.outbox_retention_s),
    ]


def feed_specs(settings: IngestSettings) -> list[FeedSpec]:
    """The configured feeds (``QCDR_INTEL_FEEDS_FILE``), or the built-in ones."""
    return load_feeds(settings.intel_feeds_file) if settings.intel_feeds_file else list(DEFAULT_FEEDS)


def build_workers(
    settings: IngestSettings,
    qualys: QualysSettings,
    engine: AsyncEngine,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    *,
    http: httpx.AsyncClient | None = None,
    qualys_transport: httpx.AsyncBaseTransport | None = None,
    abuseipdb: AbuseIPDBSettings | None = None,
    feeds: list[FeedSpec] | None = None,
) -> Workers:
    """``feeds``: the feed list already read from the settings (:func:`feed_specs`)."""
    abuseipdb = abuseipdb or AbuseIPDBSettings()
    fresh_s = reputation_freshness(settings.reputation_enabled, abuseipdb)
    relay = OutboxRelay(
        engine,
        redis,
        OUTBOX,
        prefix=settings.redis_prefix,
        maxlen=settings.stream_maxlen,
        batch=settings.relay_batch,
        poll_s=settings.outbox_poll_s,
    )
    retention = RetentionLoop(
        engine, retention_rules(settings), service="ingest", interval_s=settings.retention_interval_s
    )
    workers = Workers(relay, retention=retention)
    max_future = timedelta(seconds=settings.events_max_future_s)
    if settings.poller_enabled and qualys.has_credentials:
        workers.poller = CdrPoller(
            engine,
            sessions,
            qualys,
            interval=settings.poller_interval,
            overlap=settings.poller_overlap,
            lookback=settings.poller_lookback,
            cluster_id=settings.cluster_id,
            service_name=settings.service_name,
            notify=relay.notify,
            transport=qualys_transport,
            reputation_fresh_s=fresh_s,
            max_future=max_future,
        )
    if settings.images_enabled and qualys.has_credentials:
        workers.images = ImagesWorker(sessions, qualys, interval=settings.images_interval)
    if settings.intel_enabled:
        workers.scheduler = IntelScheduler(
            engine,
            sessions,
            feed_specs(settings) if feeds is None else feeds,
            interval=settings.intel_interval,
            ttl=settings.intel_ttl,
            never_block=settings.intel_never_block,
            cluster_id=settings.cluster_id,
            service_name=settings.service_name,
            notify=relay.notify,
            http=http,
        )
    if settings.hubble_relay_address:
        workers.hubble = HubbleCollector(
            engine,
            sessions,
            load_adapters().get("hubble"),
            RelayTarget(
                settings.hubble_relay_address,
                ca_file=settings.hubble_tls_ca_file,
                cert_file=settings.hubble_tls_cert_file,
                key_file=settings.hubble_tls_key_file,
                server_name=settings.hubble_tls_server_name,
            ),
            settings.cluster_id,
            service_name=settings.service_name,
            notify=relay.notify,
            batch_max=settings.hubble_batch_max,
            batch_wait_s=settings.hubble_batch_wait_s,
            backfill=settings.hubble_backfill,
            retry_max_s=settings.hubble_retry_max_s,
            reputation_fresh_s=fresh_s,
            max_future=max_future,
        )
    if fresh_s is not None:
        workers.reputation = ReputationWorker(
            sessions,
            ReputationChecker(abuseipdb, PostgresReputationCache(sessions), http=http),
            interval_s=settings.reputation_interval_s,
            batch=settings.reputation_batch,
        )
    return workers
