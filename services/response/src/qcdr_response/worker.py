"""The response worker: the ``analysis:findings`` consumer, the ``federation:policies`` consumer
(policies a federation hub placed here), the outbox relay, the lag exporter and the outputs
(files, auto-apply), on one engine and one Redis client.

``serve`` runs it inside the app (``consume_in_app``); ``consume`` runs it alone. Outputs are
derived from the database after each batch that changed a policy and once at start-up, so a
crash between a commit and a file write or an apply is repaired by the next start.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.logging import get_logger
from qcdr_common.retention import AgeRule, OutboxRule, RetentionLoop, Rule
from qcdr_common.streams.consumer import StreamConsumer
from qcdr_common.streams.metrics import LagExporter
from qcdr_common.streams.outbox import OutboxRelay, mark_for_replay
from qcdr_common.streams.runner import run_until_stopped, wait_any
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from qcdr_response import streams
from qcdr_response.actions import planner
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.runtime import ActionsRuntime, actions_context
from qcdr_response.db.models import outbox
from qcdr_response.dns.service import ResolveDenyService
from qcdr_response.federation.handlers import BatchResult, FederatedPoliciesHandler
from qcdr_response.federation.service import Federation
from qcdr_response.intel.blocklist import ThreatIntelBlocklistService
from qcdr_response.lifecycle import files
from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.generation import ScopeGenerator
from qcdr_response.lifecycle.handlers import FindingsHandler
from qcdr_response.lifecycle.ioc_refresh import IocRefresher
from qcdr_response.lifecycle.models import PolicyStatus
from qcdr_response.lifecycle.service import BatchOutcome, EventCache, Lifecycle
from qcdr_response.lifecycle.transitions import ClusterFailedError, TransitionError, apply
from qcdr_response.outputs.runtime import OutputsRuntime
from qcdr_response.policies.checks import default_checker
from qcdr_response.settings import DnsResolveDenyMode, ResponseSettings, ThreatIntelMode, get_settings

log = get_logger(__name__)


def make_federation(settings: ResponseSettings, cluster: ClusterGateway | None) -> Federation:
    """Placed policies pass the checker generated policies pass, for the same target versions."""
    return Federation(
        checker=default_checker(settings.generation_config()), cluster_id=settings.cluster_id, cluster=cluster
    )


def make_lifecycle(settings: ResponseSettings) -> Lifecycle:
    config = settings.generation_config()
    return Lifecycle(
        generator=ScopeGenerator(config, default_checker(config)),
        cluster_id=settings.cluster_id,
        auto_apply=settings.auto_apply,
        cache=EventCache(settings.event_cache_size),
        ioc_blocklist=settings.ioc_blocklist,
        ioc_reputation_threshold=settings.ioc_reputation_threshold,
    )


def retention_rules(settings: ResponseSettings) -> list[Rule]:
    """Handled envelope ids and published outbox rows. Findings stay: the policies in force are
    generated from them (a finding leaves through its lifecycle, not by age)."""
    return [
        AgeRule("response_received", "received_at", settings.received_retention_s),
        OutboxRule(outbox, settings.outbox_retention_s),
    ]


class ResponseWorker:
    def __init__(
        self,
        settings: ResponseSettings,
        engine: AsyncEngine,
        redis: Redis,
        *,
        cluster: ClusterGateway | None = None,
        lifecycle: Lifecycle | None = None,
        actions_ctx: ActionsContext | None = None,
        action_contexts: Any = None,
        outputs: OutputsRuntime | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = make_session_factory(engine)
        self.cluster = cluster
        self._refreshing = asyncio.Lock()
        self.lifecycle = lifecycle or make_lifecycle(settings)
        self.relay = OutboxRelay.from_settings(engine, redis, outbox, settings)
        self.retention = RetentionLoop(
            engine, retention_rules(settings), service="response", interval_s=settings.retention_interval_s
        )
        self.actions: ActionsRuntime | None = None
        if settings.actions_enabled:
            self.actions = ActionsRuntime(
                settings,
                self.sessions,
                redis,
                actions_ctx or actions_context(settings),
                cluster=cluster,
                wake_relay=self.relay.notify,
                contexts=action_contexts,
            )
        self.outputs = (
            outputs if outputs is not None else OutputsRuntime(settings, self.sessions, redis=redis)
        )
        hooks = [self.plan] if self.actions is not None else []
        if self.outputs.configs:
            hooks.append(self.outputs.enqueue)
        self.handler = FindingsHandler(
            self.sessions, self.lifecycle, after_commit=self.after_commit, hooks=hooks
        )
        self.consumer = StreamConsumer.from_settings(
            redis, settings, stream=streams.FINDINGS, group=settings.consumer_group, handler=self.handler
        )
        groups = [(streams.FINDINGS, settings.consumer_group)]
        self.federation = make_federation(settings, cluster)
        self.federation_consumer: StreamConsumer | None = None
        if settings.federation_policies:
            self.federation_consumer = StreamConsumer.from_settings(
                redis,
                settings,
                stream=streams.FEDERATION_POLICIES,
                group=settings.consumer_group,
                handler=FederatedPoliciesHandler(
                    self.sessions, self.federation, after_commit=self.after_federation
                ),
            )
            groups.append((streams.FEDERATION_POLICIES, settings.consumer_group))
        self.resolve_deny: ResolveDenyService | None = None
        if settings.dns_resolve_deny is not DnsResolveDenyMode.OFF:
            self.resolve_deny = ResolveDenyService(settings, self.sessions, cluster)
        self.threat_intel: ThreatIntelBlocklistService | None = None
        if settings.threat_intel_blocklist is not ThreatIntelMode.OFF:
            self.threat_intel = ThreatIntelBlocklistService(settings, self.sessions, cluster)
        self.ioc_refresher: IocRefresher | None = None
        if settings.ioc_blocklist and settings.ioc_reputation_threshold and settings.ioc_refresh_s:
            self.ioc_refresher = IocRefresher(
                self.sessions, self.lifecycle, settings.ioc_refresh_s, after_commit=self.after_commit
            )
        self.lag = LagExporter(
            redis, prefix=settings.redis_prefix, groups=groups, outboxes=[(engine, outbox)]
        )

    async def plan(self, session: AsyncSession, findings: list[Finding]) -> int:
        """Playbook runs for newly stored findings, in the batch's transaction."""
        assert self.actions is not None
        ctx = self.actions.ctx
        rows = await planner.plan(session, ctx, findings, ctx.playbooks)
        return len(rows)

    async def after_commit(self, outcome: BatchOutcome) -> None:
        if outcome.outbox_rows:
            self.relay.notify()
            self.outputs.notify()
        if outcome.changed:
            await self.refresh_outputs()

    async def after_federation(self, batch: BatchResult) -> None:
        if batch.outbox_rows:
            self.relay.notify()
        if batch.changed:
            await self.refresh_outputs()

    async def refresh_outputs(self) -> None:
        """Files from the current versions; with auto_apply, apply every approved policy. One at a
        time: the resync and a batch's refresh would otherwise write the same files at once."""
        async with self._refreshing:
            await self._refresh_outputs()

    async def _refresh_outputs(self) -> None:
        if self.settings.output_dir is not None:
            async with self.sessions() as session:
                written, removed = await files.sync(session, self.settings.output_dir)
            if written or removed:
                log.info("policy files written", written=len(written), removed=len(removed))
        if self.settings.auto_apply and self.cluster is not None:
            await self.apply_approved()

    async def apply_approved(self) -> int:
        """Apply approved policies one transaction each; a failure stays approved and is retried."""
        assert self.cluster is not None
        async with self.sessions() as session:
            ids = await repo.policies_to_apply(session, PolicyStatus.APPROVED.value)
        applied = 0
        for policy_id in ids:
            try:
                async with self.sessions.begin() as session:
                    await apply(session, policy_id, self.cluster, cluster_id=self.settings.cluster_id)
                applied += 1
            except (ClusterFailedError, TransitionError) as exc:
                log.warning("auto-apply failed", policy_id=policy_id, reason=exc.reason)
        if applied:
            self.relay.notify()
        return applied

    async def resync_loop(self, stop: asyncio.Event) -> None:
        """``refresh_outputs`` every ``policy_resync_s``, like a controller's resync period: an
        apply or file write that failed is retried although no new finding changes a policy, and a
        policy file deleted by hand comes back."""
        while not stop.is_set():
            await wait_any(stop, seconds=self.settings.policy_resync_s)
            if stop.is_set():
                return
            try:
                await self.refresh_outputs()
            except Exception:  # the database away: the next round tries again
                log.exception("refreshing policy outputs failed; retried at the next resync")

    async def _startup(self) -> None:
        try:
            await self.refresh_outputs()
        except Exception:  # the database may not be migrated yet: the next batch tries again
            log.exception("refreshing outputs at start-up failed")

    async def run(self, stop: asyncio.Event, *, signals: bool = False) -> None:
        """Consume, relay and export lag until ``stop`` is set (or SIGTERM with ``signals``)."""
        await self._startup()
        loops = [self.consumer.run, self.relay.run, self.lag.run, self.retention.run]
        if self.settings.output_dir is not None or (self.settings.auto_apply and self.cluster is not None):
            loops.append(self.resync_loop)
        if self.federation_consumer is not None:
            loops.append(self.federation_consumer.run)
        if self.actions is not None:
            loops += [self.actions.requests.run, self.actions.results.run, self.actions.lease_loop]
        loops += self.outputs.loops()
        if self.resolve_deny is not None:
            loops.append(self.resolve_deny.run)
        if self.threat_intel is not None:
            loops.append(self.threat_intel.run)
        if self.ioc_refresher is not None:
            loops.append(self.ioc_refresher.run)
        try:
            await run_until_stopped(*loops, stop=stop, signals=signals)
        finally:
            await self.outputs.aclose()


async def consume() -> None:
    """``qcdr-response consume``: the worker alone, until SIGTERM."""
    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    cluster = ClusterGateway.from_settings(settings)
    try:
        await ResponseWorker(settings, engine, redis, cluster=cluster).run(asyncio.Event(), signals=True)
    finally:
        if cluster is not None:
            await cluster.close()
        await redis.aclose()
        await engine.dispose()


async def replay(since: datetime | None) -> int:
    """``qcdr-response replay``: publish the outbox again (rows created since ``since``)."""
    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        await mark_for_replay(engine, outbox, since=since, stream=streams.EVENTS)
        relay = OutboxRelay(
            engine, redis, outbox, prefix=settings.redis_prefix, maxlen=settings.stream_maxlen
        )
        # what went out: the rows marked again plus any a crashed relay never published
        return await relay.publish_pending()
    finally:
        await redis.aclose()
        await engine.dispose()
