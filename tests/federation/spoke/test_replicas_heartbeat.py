"""Two spoke replicas heartbeat in turn: each heartbeat carries the counts summed and the problems
joined over the replicas seen lately, so the hub's view (and the cluster's health, degraded while
a problem is reported) does not flip with whichever replica spoke last. Found by the replicas
audit: each heartbeat carried its own process's counters and problems. And the interval the hub
tells is clamped: a huge one stopped the heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_common.contracts.federation.v1 import ClusterHealth, ClusterHeartbeat, HeartbeatAck, PendingAction
from qcdr_common.db import make_session_factory
from qcdr_federation.settings import MAX_HEARTBEAT_INTERVAL_S
from qcdr_federation.spoke.heartbeat import Heartbeat
from qcdr_federation.spoke.models import SpokeReplicaRow
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.response_api import ResponseApiError
from qcdr_federation.spoke.runtime import RESPONSE_API, AgentState
from qcdr_federation.spoke.status import StatusTracker
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.spoke.test_units import settings

pytestmark = [pytest.mark.db]


class ResponseApi:
    async def pending_actions(self) -> list[PendingAction]:
        return []


class Down:
    async def pending_actions(self) -> list[PendingAction]:
        raise ResponseApiError("response API: connection refused")


def replica(engine: AsyncEngine) -> Heartbeat:
    s = settings()
    sessions = make_session_factory(engine)
    state = AgentState.from_settings(s)
    hub: Any = None
    registrar = Registrar(s, sessions, hub, state)
    return Heartbeat(s, engine, sessions, hub, ResponseApi(), None, registrar, state)  # type: ignore[arg-type]


async def test_every_replica_heartbeats_the_counts_and_problems_of_all(spoke_engine: AsyncEngine) -> None:
    a, b = replica(spoke_engine), replica(spoke_engine)
    assert a.state.replica_id != b.state.replica_id
    a.state.counts["events_forwarded"] = 40
    a.state.counts["commands_run"] = 1
    a.state.set_problem("forwarder", "events: the hub refused a batch")
    b.state.counts["events_forwarded"] = 2
    first, _ = await a.build()
    assert first.counts["events_forwarded"] == 40
    assert first.problems == ("events: the hub refused a batch",)
    second, _ = await b.build()  # b has no problem of its own, but a still has one
    assert second.counts["events_forwarded"] == 42
    assert second.counts["commands_run"] == 1
    assert second.counts["replicas"] == 2
    assert second.problems == ("events: the hub refused a batch",)
    a.state.clear_problem("forwarder")
    b.state.set_problem("baselines_view", "analysis_shared_profiles is missing")
    await b.build()
    third, _ = await a.build()
    assert third.problems == ("analysis_shared_profiles is missing",)
    assert third.counts["events_forwarded"] == 42


async def test_a_replica_whose_response_api_is_down_says_so_in_every_heartbeat(
    spoke_engine: AsyncEngine,
) -> None:
    a, b = replica(spoke_engine), replica(spoke_engine)
    a.response = Down()  # type: ignore[assignment]
    await a.build()
    beat, _ = await b.build()
    assert beat.problems == ("response API: connection refused",)
    assert RESPONSE_API in a.state.problems
    assert RESPONSE_API not in b.state.problems


async def test_a_replica_that_stopped_heartbeating_no_longer_counts(spoke_engine: AsyncEngine) -> None:
    a, b = replica(spoke_engine), replica(spoke_engine)
    a.state.counts["events_forwarded"] = 40
    a.state.set_problem("forwarder", "events: the hub refused a batch")
    await a.build()
    sessions = make_session_factory(spoke_engine)
    gone = datetime.now(UTC) - timedelta(seconds=3 * b.state.heartbeat_interval_s + 1)
    async with sessions() as session:  # a's pod went away three heartbeats ago
        await session.execute(
            update(SpokeReplicaRow)
            .where(SpokeReplicaRow.replica_id == a.state.replica_id)
            .values(seen_at=gone)
        )
        await session.commit()
    beat, _ = await b.build()
    assert beat.problems == ()
    assert beat.counts["events_forwarded"] == 0
    assert beat.counts["replicas"] == 1
    async with sessions() as session:  # a day later its row goes
        await session.execute(
            update(SpokeReplicaRow)
            .where(SpokeReplicaRow.replica_id == a.state.replica_id)
            .values(seen_at=datetime.now(UTC) - timedelta(days=1, seconds=1))
        )
        await session.commit()
    await b.build()
    async with sessions() as session:
        ids = (await session.scalars(select(SpokeReplicaRow.replica_id))).all()
    assert ids == [b.state.replica_id]


class HugeIntervalHub:
    """Takes every heartbeat and answers an interval far past any a hub can be configured with
    (any positive number passes the ack's schema)."""

    async def heartbeat(self, heartbeat: ClusterHeartbeat) -> HeartbeatAck:
        return HeartbeatAck(
            health=ClusterHealth.HEALTHY, heartbeat_interval_s=1e15, policies_etag="e", commands_pending=0
        )


async def test_a_huge_interval_from_the_hub_is_clamped_and_the_heartbeats_go_on(
    spoke_engine: AsyncEngine,
) -> None:
    """Taken as told, the next heartbeat's "replicas seen within three intervals" overflowed a
    timedelta: no heartbeat was built again (and the loop would have slept that long)."""
    a = replica(spoke_engine)
    hub: Any = HugeIntervalHub()
    a.client = hub
    a.status = StatusTracker(a.settings, a.sessions, hub, a.registrar, a.state)
    assert await a.beat_once()
    assert a.state.heartbeat_interval_s == MAX_HEARTBEAT_INTERVAL_S
    assert await a.beat_once()
    assert a.state.counts["heartbeats"] == 2
