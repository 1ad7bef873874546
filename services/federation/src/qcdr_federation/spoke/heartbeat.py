"""The heartbeat: every ``heartbeat_interval_s`` (the hub says how often, at registration and in
every ack) the spoke tells the hub it is alive, what it runs, what it counted, the full status of
every policy it holds, the response actions waiting for approval (and running leases), and what it
finds wrong itself. A heartbeat that fails is not retried early: the next one is due anyway.

Every replica of the spoke heartbeats. Counts and problems are each process's own, so each
replica stores its own in the spoke's database and its heartbeat carries the counts summed and
the problems joined over the replicas seen within three intervals: the hub's view (and a
cluster's health, degraded while it reports a problem) does not flip with whichever replica spoke
last.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from qcdr_common.contracts.federation.v1 import (
    ClusterHeartbeat,
    PendingAction,
    PolicyApplyState,
    PolicyApplyStatus,
)
from qcdr_common.logging import get_logger
from qcdr_common.streams.outbox import outbox_backlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qcdr_federation.backoff import StoppedError, sleep_unless_stopped, unless_stopped
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import HubClient, HubError, agent_version
from qcdr_federation.spoke.models import SpokePolicyStatusRow
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.response_api import ResponseApi, ResponseApiError
from qcdr_federation.spoke.runtime import MAX_PROBLEMS, RESPONSE_API, AgentState, utcnow
from qcdr_federation.spoke.status import StatusTracker, to_apply_status

log = get_logger(__name__)

MAX_POLICIES = 10_000
# a replica not heartbeating for this many intervals is gone: its counts and problems no longer
# count; after FORGET_REPLICA_AFTER its row goes
LIVE_INTERVALS = 3
FORGET_REPLICA_AFTER = timedelta(days=1)
# forwarding and status counters the heartbeat passes on (the hub shows them per cluster)
COUNTED = (
    "events_forwarded",
    "findings_forwarded",
    "events_rejected",
    "findings_rejected",
    "events_filtered",
    "status_changes",
    "commands_run",
    "baselines_uploaded",
    "baselines_received",
)


class Heartbeat:
    def __init__(
        self,
        settings: FederationSettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        client: HubClient,
        response: ResponseApi,
        status: StatusTracker,
        registrar: Registrar,
        state: AgentState,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.client = client
        self.response = response
        self.status = status
        self.registrar = registrar
        self.state = state

    async def _actions(self) -> tuple[PendingAction, ...]:
        try:
            actions = await self.response.pending_actions()
        except ResponseApiError as exc:
            if RESPONSE_API not in self.state.problems:
                log.warning("federation_response_api_down", error=str(exc))
            self.state.set_problem(RESPONSE_API, str(exc))
            return ()
        except Exception as exc:  # whatever the response API does, the heartbeat goes out
            self.state.set_problem(RESPONSE_API, f"response API: {type(exc).__name__}")
            return ()
        if RESPONSE_API in self.state.problems:
            log.info("federation_response_api_back")
        self.state.clear_problem(RESPONSE_API)
        return tuple(actions)

    async def build(self) -> tuple[ClusterHeartbeat, list[SpokePolicyStatusRow]]:
        """The heartbeat, and the status rows it carries (marked reported once the hub has them)."""
        now = utcnow()
        actions = await self._actions()  # first: it sets or clears this replica's response API problem
        own = {k: int(self.state.counts.get(k, 0)) for k in COUNTED}
        live = timedelta(seconds=LIVE_INTERVALS * self.state.heartbeat_interval_s)
        async with self.sessions() as session:
            held = await repo.held_with_status(session)
            replicas = await repo.report_replica(
                session,
                self.state.replica_id,
                counts=own,
                problems=self.state.problem_list(),
                now=now,
                live_after=now - live,
                forget_before=now - FORGET_REPLICA_AFTER,
            )
            await session.commit()
        policies: list[PolicyApplyStatus] = []
        rows: list[SpokePolicyStatusRow] = []
        for item in held[:MAX_POLICIES]:
            if item.status is not None and item.status.generation == item.policy.generation:
                policies.append(to_apply_status(item.status))
                rows.append(item.status)
            else:  # held but no word from the response service yet
                policies.append(
                    PolicyApplyStatus(
                        policy_id=item.policy.policy_id,
                        generation=item.policy.generation,
                        content_hash=item.policy.content_hash,
                        state=PolicyApplyState.PENDING,
                        observed_at=item.policy.received_at,
                    )
                )
        counts = {k: replicas.counts.get(k, 0) for k in COUNTED}
        counts["replicas"] = replicas.replicas
        counts["policies_held"] = len(held)
        try:
            counts["outbox_backlog"] = await outbox_backlog(self.engine, OUTBOX)
        except Exception as exc:  # counted when the database answers; never a reason to skip a beat
            log.warning("federation_outbox_backlog_unknown", error=repr(exc))
        heartbeat = ClusterHeartbeat(
            sent_at=now,
            version=agent_version(),
            counts=counts,
            policies=tuple(policies),
            actions=actions,
            problems=replicas.problems[:MAX_PROBLEMS],
        )
        return heartbeat, rows

    async def beat_once(self) -> bool:
        """Send one heartbeat; True when the hub took it."""
        try:
            heartbeat, rows = await self.build()
        except Exception as exc:  # the database away: the hub will see us late, and degrade us
            log.exception("federation_heartbeat_build_failed", error=repr(exc))
            return False
        try:
            ack = await self.client.heartbeat(heartbeat)
        except HubError as exc:
            self.registrar.failed(exc)
            log.warning("federation_heartbeat_failed", error=exc.describe())
            await self._persist_contact()
            return False
        self.state.contact_ok()
        self.state.counts["heartbeats"] += 1
        self.state.take_heartbeat_interval(ack.heartbeat_interval_s)
        if ack.rotate_credential:
            self.registrar.request_rotation()
        await self.status.mark_reported(rows)
        await self._persist_contact()
        return True

    async def _persist_contact(self) -> None:
        try:
            async with self.sessions() as session:
                await repo.record_contact(
                    session, last_contact_at=self.state.last_contact_at, last_error=self.state.last_error
                )
                await session.commit()
        except Exception as exc:
            log.warning("federation_contact_not_stored", error=repr(exc))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self.registrar.wait_ready(stop):
                return
            try:
                await unless_stopped(self.beat_once(), stop)
            except StoppedError:
                return
            interval = max(0.1, self.state.heartbeat_interval_s)
            if await sleep_unless_stopped(stop, interval):
                return
