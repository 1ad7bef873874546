"""The spoke agent: every loop of the spoke role, run together until ``stop``.

``run_agent(settings, engine, redis, stop)`` runs without the app (tests, benchmarks, a ``consume``
process); :func:`qcdr_federation.spoke.install.install_spoke` runs it inside ``serve`` with the
app's engine, Redis and outbox relay. Each loop survives the hub, the response API, Redis or
PostgreSQL going away (it logs, backs off and tries again), so a loop that ends early is a bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from qcdr_common.contracts.federation.v1 import ForwardKind
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.logging import configure_logging, get_logger
from qcdr_common.retention import OutboxRule, RetentionLoop
from qcdr_common.streams.consumer import StreamConsumer
from qcdr_common.streams.outbox import OutboxRelay
from qcdr_common.streams.runner import install_signal_handlers, run_until_stopped
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qcdr_federation.db.base import OUTBOX
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke.baselines import BaselineSync
from qcdr_federation.spoke.client import HubClient
from qcdr_federation.spoke.commands import CommandRunner
from qcdr_federation.spoke.forwarder import Forwarder
from qcdr_federation.spoke.heartbeat import Heartbeat
from qcdr_federation.spoke.policies import PolicyPuller
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.response_api import ResponseApi
from qcdr_federation.spoke.runtime import AgentState
from qcdr_federation.spoke.status import GROUP as STATUS_GROUP
from qcdr_federation.spoke.status import RESPONSE_EVENTS, StatusTracker

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]


@dataclass
class SpokeAgent:
    """The agent's parts (built by :func:`build_agent`); tests drive them one by one."""

    settings: FederationSettings
    engine: AsyncEngine
    redis: Redis
    sessions: async_sessionmaker[AsyncSession]
    state: AgentState
    client: HubClient
    response: ResponseApi
    relay: OutboxRelay
    own_relay: bool
    registrar: Registrar
    puller: PolicyPuller
    status: StatusTracker
    heartbeat: Heartbeat
    commands: CommandRunner
    baselines: BaselineSync
    retention: RetentionLoop
    forwarders: list[Forwarder] = field(default_factory=list)

    def status_consumer(self) -> StreamConsumer:
        return StreamConsumer.from_settings(
            self.redis, self.settings, stream=RESPONSE_EVENTS, group=STATUS_GROUP, handler=self.status.handle
        )

    def workers(self) -> list[tuple[str, Worker]]:
        workers: list[tuple[str, Worker]] = [
            ("registration", self.registrar.run),
            ("heartbeat", self.heartbeat.run),
            ("policies", self.puller.run),
            ("status-report", self.status.run),
            ("status-events", self.status_consumer().run),
            ("commands", self.commands.run),
        ]
        if self.settings.share_baselines:
            workers.append(("baselines", self.baselines.run))
        for forwarder in self.forwarders:
            workers.append((f"forward-{forwarder.kind.value}", _forwarder_worker(forwarder, self.redis)))
        if self.own_relay:
            workers.append(("outbox-relay", self.relay.run))
        workers.append(("retention", self.retention.run))
        return workers

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.response.aclose()


def _forwarder_worker(forwarder: Forwarder, redis: Redis) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        await forwarder.run(redis)

    return run


def build_agent(
    settings: FederationSettings,
    engine: AsyncEngine,
    redis: Redis,
    stop: asyncio.Event,
    *,
    relay: OutboxRelay | None = None,
    state: AgentState | None = None,
    hub_transport: httpx.AsyncBaseTransport | None = None,
    response_transport: httpx.AsyncBaseTransport | None = None,
) -> SpokeAgent:
    sessions = make_session_factory(engine)
    state = state if state is not None else AgentState.from_settings(settings)
    client = HubClient(settings, transport=hub_transport)
    response = ResponseApi(settings, transport=response_transport)
    own_relay = relay is None
    relay = relay if relay is not None else OutboxRelay.from_settings(engine, redis, OUTBOX, settings)
    registrar = Registrar(settings, sessions, client, state)
    status = StatusTracker(settings, sessions, client, registrar, state)
    forwarders = [
        Forwarder(kind, settings, client, registrar, state, stop)
        for kind, enabled in (
            (ForwardKind.EVENTS, settings.forward_events),
            (ForwardKind.FINDINGS, settings.forward_findings),
        )
        if enabled
    ]
    return SpokeAgent(
        settings=settings,
        engine=engine,
        redis=redis,
        sessions=sessions,
        state=state,
        client=client,
        response=response,
        relay=relay,
        own_relay=own_relay,
        registrar=registrar,
        puller=PolicyPuller(settings, sessions, client, registrar, state, relay.notify),
        status=status,
        heartbeat=Heartbeat(settings, engine, sessions, client, response, status, registrar, state),
        commands=CommandRunner(settings, sessions, client, response, registrar, state),
        baselines=BaselineSync(settings, sessions, client, registrar, state, relay.notify),
        retention=RetentionLoop(
            engine,
            [OutboxRule(OUTBOX, settings.outbox_retention_s)],
            service="federation",
            interval_s=settings.retention_interval_s,
        ),
        forwarders=forwarders,
    )


async def run_agent(
    settings: FederationSettings,
    engine: AsyncEngine,
    redis: Redis,
    stop: asyncio.Event,
    *,
    relay: OutboxRelay | None = None,
    state: AgentState | None = None,
    hub_transport: httpx.AsyncBaseTransport | None = None,
    response_transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Run the spoke until ``stop`` is set. Without ``relay`` it runs an outbox relay of its own
    (pass the app's when the app runs one already)."""
    agent = build_agent(
        settings,
        engine,
        redis,
        stop,
        relay=relay,
        state=state,
        hub_transport=hub_transport,
        response_transport=response_transport,
    )
    log.info(
        "federation_spoke_started",
        cluster=agent.state.cluster_name,
        hub_url=agent.state.hub_url,
        workers=[name for name, _ in agent.workers()],
    )
    try:
        await run_until_stopped(*(worker for _, worker in agent.workers()), stop=stop, signals=False)
    finally:
        await agent.aclose()
        log.info("federation_spoke_stopped", cluster=agent.state.cluster_name)


async def consume(settings: FederationSettings) -> None:
    """The agent as a process of its own (``consume_in_app`` off, e.g. a ``consume`` command): its
    own engine, Redis and outbox relay, until SIGTERM or SIGINT."""
    configure_logging(settings.log_level, settings.log_format.value)
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await run_agent(settings, engine, redis, stop)
    finally:
        await redis.aclose()
        await engine.dispose()
