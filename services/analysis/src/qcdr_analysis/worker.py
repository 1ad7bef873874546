"""The analysis worker: the ``ingest:events`` consumer, the outbox relay and the lag exporter, on
one engine and one Redis client (plus the ``ingest:samples`` consumer with the workload anomaly
engine, and the ``federation:baselines`` consumer of shared baselines).

``serve`` runs it inside the app (``consume_in_app``); ``consume`` runs it alone; ``replay``
re-publishes findings from Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.gc_tuning import tune_gc
from qcdr_common.logging import get_logger
from qcdr_common.retention import AgeRule, OutboxRule, RetentionLoop, Rule
from qcdr_common.streams import (
    LagExporter,
    OutboxRelay,
    StreamConsumer,
    enqueue,
    new_envelope,
    run_until_stopped,
)
from qcdr_common.streams.lease import RedisLease
from qcdr_common.streams.runner import Worker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from qcdr_analysis import streams
from qcdr_analysis.anomaly.handlers import SamplesHandler
from qcdr_analysis.anomaly.trainer import ModelTrainer
from qcdr_analysis.correlation.checkpoint import RedisCheckpoint
from qcdr_analysis.correlation.correlator import Correlator
from qcdr_analysis.correlation.flusher import CorrelationFlusher
from qcdr_analysis.correlation.patterns import PatternError
from qcdr_analysis.detectors import dga, workload_anomaly
from qcdr_analysis.dns.classifier import warm_classifier
from qcdr_analysis.findings import repository as repo
from qcdr_analysis.findings.handlers import EventsHandler
from qcdr_analysis.findings.idle_save import IdleSaver
from qcdr_analysis.findings.models import OUTBOX
from qcdr_analysis.findings.service import BatchOutcome, DetectorConfigError, DetectorSet
from qcdr_analysis.leader import LeaderElected
from qcdr_analysis.profiles.handlers import BaselinesHandler
from qcdr_analysis.settings import AnalysisSettings, get_settings

log = get_logger(__name__)
REPLAY_PAGE = 1000


def make_detectors(settings: AnalysisSettings) -> DetectorSet:
    """The configured detectors and chain patterns; a bad configuration, rule or pattern file
    raises here, at start."""
    detectors = DetectorSet.configure(settings.detectors, settings.disabled_detectors)
    if settings.correlation_enabled:
        try:
            detectors.correlator = Correlator.from_patterns(
                settings.correlation_patterns_dir,
                source_idle_s=settings.correlation_source_idle_s,
                source_max_lag_s=settings.correlation_source_max_lag_s,
            )
        except PatternError as exc:
            raise DetectorConfigError(f"correlation patterns: {exc}") from exc
    return detectors


def retention_rules(settings: AnalysisSettings) -> list[Rule]:
    """Findings by the time they were raised, handled envelope ids, published outbox rows."""
    return [
        AgeRule("analysis_findings", "created_at", settings.findings_retention_s),
        AgeRule("analysis_received", "received_at", settings.received_retention_s),
        OutboxRule(OUTBOX, settings.outbox_retention_s),
    ]


class AnalysisWorker:
    def __init__(
        self,
        settings: AnalysisSettings,
        engine: AsyncEngine,
        redis: Redis,
        *,
        detectors: DetectorSet | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        """``gate``: asked before the consumers read and the flusher writes (the lease, leader.py)."""
        self.settings = settings
        self.sessions = make_session_factory(engine)
        self.detectors = detectors or make_detectors(settings)
        if self.detectors.correlator is not None:
            self.detectors.correlator.attach(RedisCheckpoint(redis, settings.redis_prefix))
        self.relay = OutboxRelay.from_settings(engine, redis, OUTBOX, settings)
        self.retention = RetentionLoop(
            engine, retention_rules(settings), service="analysis", interval_s=settings.retention_interval_s
        )
        self.handler = EventsHandler(
            self.sessions, self.detectors, cluster_id=settings.cluster_id, after_commit=self.after_commit
        )
        self.consumer = StreamConsumer.from_settings(
            redis,
            settings,
            stream=streams.EVENTS,
            group=settings.consumer_group,
            handler=self.handler,
            gate=gate,
        )
        self.flusher: CorrelationFlusher | None = None
        if self.detectors.correlator is not None:
            self.flusher = CorrelationFlusher(
                self.sessions,
                self.detectors,
                cluster_id=settings.cluster_id,
                idle_seconds=settings.correlation_idle_flush_s,
                gate=gate,
                hold_s=settings.stream_claim_idle_ms / 1000,
            )
        self.saver: IdleSaver | None = None
        self.consumers_done = asyncio.Event()  # the idle saver's last save comes after
        if self.detectors.stateful:
            self.saver = IdleSaver(
                self.sessions,
                self.detectors,
                idle_seconds=settings.idle_save_s,
                gate=gate,
                consumers_done=self.consumers_done,
            )
        groups = [(streams.EVENTS, settings.consumer_group)]
        self.samples_consumer: StreamConsumer | None = None
        self.trainer: ModelTrainer | None = None
        if workload_anomaly.NAME in self.detectors.names:
            samples = SamplesHandler(
                self.sessions, self.detectors, cluster_id=settings.cluster_id, after_commit=self.after_commit
            )
            self.samples_consumer = StreamConsumer.from_settings(
                redis,
                settings,
                stream=streams.SAMPLES,
                group=settings.consumer_group,
                handler=samples,
                gate=gate,
            )
            self.trainer = ModelTrainer(
                self.sessions,
                self.detectors,
                self.detectors.state_of(workload_anomaly.NAME),
                poll_seconds=settings.model_refit_poll_s,
            )
            groups.append((streams.SAMPLES, settings.consumer_group))
        self.baselines_consumer: StreamConsumer | None = None
        if settings.shared_baselines_enabled:
            self.baselines_consumer = StreamConsumer.from_settings(
                redis,
                settings,
                stream=streams.BASELINES,
                group=settings.consumer_group,
                handler=BaselinesHandler(self.sessions, self.detectors),
                gate=gate,
            )
            groups.append((streams.BASELINES, settings.consumer_group))
        self.lag = LagExporter(
            redis,
            prefix=settings.redis_prefix,
            groups=groups,
            outboxes=[(engine, OUTBOX)],
        )

    def after_commit(self, outcome: BatchOutcome) -> None:
        if outcome.outbox_rows:
            self.relay.notify()  # publish now rather than at the next poll

    async def _consume(self, stop: asyncio.Event) -> None:
        """The stream consumers; ``consumers_done`` is set once all have returned."""
        consumers = [self.consumer, self.samples_consumer, self.baselines_consumer]
        try:
            async with asyncio.TaskGroup() as group:
                for consumer in consumers:
                    if consumer is not None:
                        group.create_task(consumer.run(stop))
        finally:
            self.consumers_done.set()

    @property
    def tasks(self) -> list[Worker]:
        tasks: list[Worker] = [self._consume, self.relay.run, self.lag.run, self.retention.run]
        if self.trainer is not None:
            tasks.append(self.trainer.run)
        if self.flusher is not None:
            tasks.append(self.flusher.run)
        if self.saver is not None:
            tasks.append(self.saver.run)
        return tasks

    async def run(self, stop: asyncio.Event) -> None:
        """Consumers, relay, lag exporter and trainer until ``stop`` (the caller handles signals)."""
        log.info("analysis worker started", detectors=self.detectors.names)
        await run_until_stopped(*self.tasks, stop=stop, signals=False)


def elected_worker(
    settings: AnalysisSettings, engine: AsyncEngine, redis: Redis, *, detectors: DetectorSet | None = None
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The worker as ``consume`` and ``serve`` run it: under the analysis lease (leader.py) unless
    ``QCDR_LEADER_ELECTION`` is off. ``detectors`` serve the first lead; each later lead builds
    fresh ones, since what the old ones held in memory may be stale by then."""
    if not settings.leader_election:
        return AnalysisWorker(settings, engine, redis, detectors=detectors).run
    unused = [detectors] if detectors is not None else []

    def tasks(gate: Callable[[], bool]) -> list[Worker]:
        worker = AnalysisWorker(
            settings, engine, redis, detectors=unused.pop() if unused else None, gate=gate
        )
        log.info("analysis worker ready for the next lead", detectors=worker.detectors.names)
        return worker.tasks

    prefix = settings.redis_prefix
    lease = RedisLease(
        redis,
        f"{prefix}:analysis:leader" if prefix else "analysis:leader",
        settings.consumer_name,
        settings.leader_lease_s,
    )
    return LeaderElected(lease, tasks, lease_s=settings.leader_lease_s).run


async def consume() -> None:
    """``qcdr-analysis consume``: the worker without HTTP, until SIGTERM."""
    settings = get_settings()
    detectors = make_detectors(settings)  # before connecting: a bad rule file fails fast
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    # The DGA model takes seconds to load: in a thread now rather than on the loop, inside the
    # first batch with a DNS query (``serve`` does the same in its lifespan).
    warming = asyncio.create_task(asyncio.to_thread(warm_classifier)) if dga.NAME in detectors.names else None
    try:
        worker = elected_worker(settings, engine, redis, detectors=detectors)
        if settings.gc_tuning:
            tune_gc()
        await run_until_stopped(worker)
    finally:
        if warming is not None:
            await warming  # a thread cannot be cancelled; it ends once the model is loaded
        await redis.aclose()
        await engine.dispose()


async def replay_findings(
    settings: AnalysisSettings, engine: AsyncEngine, redis: Redis, since: datetime | None
) -> int:
    """Re-publish the findings created at or after ``since`` under their original envelope ids.

    Outbox rows still present are marked unpublished; findings whose row was purged get a new one
    (same envelope id, a new correlation chain). The relay then publishes them, here and now.
    """
    sessions = make_session_factory(engine)
    async with sessions.begin() as session:
        count = await repo.mark_findings_for_replay(session, since)
    after: tuple[datetime, str] | None = None
    while True:
        async with sessions.begin() as session:
            rows = await repo.findings_without_outbox_row(session, since, after=after, limit=REPLAY_PAGE)
            if not rows:
                break
            envelopes = [
                new_envelope(
                    streams.FINDING_RAISED,
                    row.payload,
                    source=streams.SERVICE,
                    cluster_id=row.cluster or settings.cluster_id,
                    occurred_at=row.event_time,
                    id=row.envelope_id,
                )
                for row in rows
            ]
            await enqueue(session, OUTBOX, streams.FINDINGS, envelopes)
            count += len(rows)
            after = (rows[-1].created_at, rows[-1].id)
    relay = OutboxRelay(engine, redis, OUTBOX, prefix=settings.redis_prefix, maxlen=settings.stream_maxlen)
    published = await relay.publish_pending()
    log.info("findings replayed", requeued=count, published=published)
    return count


async def replay(since: datetime | None) -> int:
    """``qcdr-analysis replay``."""
    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        return await replay_findings(settings, engine, redis, since)
    finally:
        await redis.aclose()
        await engine.dispose()
