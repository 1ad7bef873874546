"""The actions machinery of one response process: the context, the executor with its two
consumers (requests, node results) and the lease loop. ``ResponseWorker`` runs it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import StreamConsumer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_response import streams
from qcdr_response.actions import service
from qcdr_response.actions.base import ActionError, Scope
from qcdr_response.actions.context import ActionsContext
from qcdr_response.actions.executor import ActionExecutor
from qcdr_response.actions.playbook import load_playbooks
from qcdr_response.actions.policy._context import PolicyContext
from qcdr_response.actions.registry import load_actions
from qcdr_response.lifecycle.cluster import ClusterError, ClusterGateway
from qcdr_response.policies.checks import default_checker
from qcdr_response.settings import ResponseSettings

log = get_logger(__name__)


def actions_context(settings: ResponseSettings) -> ActionsContext:
    """The context with the playbooks loaded (a broken playbook file fails start-up, loudly)."""
    playbooks = load_playbooks(
        settings.playbooks_dir, builtin=settings.use_builtin_playbooks, known_actions=load_actions().names()
    )
    return ActionsContext.from_settings(settings, tuple(playbooks))


class ScopeContexts:
    """Makes the context an action of each scope needs, on first use."""

    def __init__(self, settings: ResponseSettings, cluster: ClusterGateway | None) -> None:
        self.settings = settings
        self.cluster = cluster

    async def __call__(self, scope: Scope) -> Any:
        if scope in (Scope.CLUSTER, Scope.POLICY):
            if self.cluster is None:
                raise ActionError("no cluster configured (set QCDR_KUBECONFIG or QCDR_KUBE_IN_CLUSTER)")
            try:
                client = self.cluster.client()
            except ClusterError as exc:
                raise ActionError(str(exc)) from None
            manager = self.settings.field_manager
            if scope == Scope.POLICY:
                checker = default_checker(self.settings.generation_config())
                return PolicyContext(client=client, checker=checker, field_manager=manager)
            from qcdr_response.actions.cluster._context import ClusterContext

            return ClusterContext(client=client, field_manager=manager)
        raise ActionError(f"{scope.value} actions run in the node agent, not here")


class ActionsRuntime:
    def __init__(
        self,
        settings: ResponseSettings,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        ctx: ActionsContext,
        *,
        cluster: ClusterGateway | None,
        wake_relay: Callable[[], None],
        contexts: Any = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.ctx = ctx
        self.wake_relay = wake_relay
        self.executor = ActionExecutor(
            sessions, ctx, contexts or ScopeContexts(settings, cluster), after_commit=wake_relay
        )
        self.requests = StreamConsumer.from_settings(
            redis,
            settings,
            stream=streams.ACTIONS,
            group=streams.EXECUTOR_GROUP,
            handler=self.executor.handle_requests,
        )
        self.results = StreamConsumer.from_settings(
            redis,
            settings,
            stream=streams.ACTION_RESULTS,
            group=streams.RESULTS_GROUP,
            handler=self.executor.handle_results,
        )

    async def expire_once(self) -> list[int]:
        async with self.sessions.begin() as session:
            ids = await service.expire_leases(session, self.ctx, datetime.now(UTC))
        if ids:
            log.info("containment leases ended", actions=ids)
            self.wake_relay()
        return ids

    async def lease_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.expire_once()
            except Exception:  # the database may be away for a moment: try again next round
                log.exception("expiring leases failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.lease_poll_s)
