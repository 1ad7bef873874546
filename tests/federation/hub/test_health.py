"""Cluster health: derived from the last contact (at read time), transitions stored and logged by
the sweep under an advisory lock, gauges per state; failed policies and reported problems degrade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from qcdr_common.contracts.federation.v1 import ClusterHealth, ClusterHeartbeat
from qcdr_common.testing.logs import capture_logs
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.health import SWEEP_LOCK_KEY, derive_health, sweep_health
from qcdr_federation.settings import FederationSettings
from sqlalchemy import func, select, update

from tests.federation.conftest import (
    READ_HEADERS,
    WRITE_HEADERS,
    declare_cluster,
    make_hub_settings,
    register_spoke,
)
from tests.federation.policies.conftest import policy_body

pytestmark = [pytest.mark.db, pytest.mark.redis]

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def hub_settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    # no background sweep: the tests sweep with a clock of their own
    return make_hub_settings(
        federation_db, redis_url, redis_prefix, degraded_after_s=2, offline_after_s=4, consume_in_app=False
    )


def gauge(state: str) -> float:
    return REGISTRY.get_sample_value("qualys_federation_clusters", {"state": state}) or 0.0


@pytest.mark.parametrize(
    ("registered", "silent_s", "problems", "failed", "expected"),
    [
        (False, None, False, False, ClusterHealth.PENDING),
        (True, None, False, False, ClusterHealth.HEALTHY),  # registered, no heartbeat yet
        (True, 1.0, False, False, ClusterHealth.HEALTHY),
        (True, 2.0, False, False, ClusterHealth.HEALTHY),  # at the threshold: not yet
        (True, 2.5, False, False, ClusterHealth.DEGRADED),
        (True, 1.0, True, False, ClusterHealth.DEGRADED),
        (True, 1.0, False, True, ClusterHealth.DEGRADED),
        (True, 4.5, False, False, ClusterHealth.OFFLINE),
        (True, 60.0, True, True, ClusterHealth.OFFLINE),
    ],
)
def test_derive_health(
    registered: bool,
    silent_s: float | None,
    problems: bool,
    failed: bool,
    expected: ClusterHealth,
) -> None:
    now = T0 + timedelta(minutes=1)
    health = derive_health(
        registered_at=T0 if registered else None,
        last_heartbeat_at=now - timedelta(seconds=silent_s) if silent_s is not None else None,
        problems=problems,
        policy_failed=failed,
        settings=FederationSettings(_env_file=None, degraded_after_s=2, offline_after_s=4),
        now=now if silent_s is not None else T0 + timedelta(seconds=1),
    )
    assert health is expected


async def _beat(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> Any:
    body = ClusterHeartbeat(sent_at=datetime.now(UTC), **fields).model_dump(mode="json")
    response = await client.post("/federation/v1/heartbeat", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_sweep_records_transitions_once_and_sets_gauges(
    hub_client: httpx.AsyncClient, hub_app: Any, hub_settings: FederationSettings
) -> None:
    sessions = hub_app.state.sessions
    spoke = await register_spoke(hub_client, "eu-1")
    await declare_cluster(hub_client, "never")
    await _beat(hub_client, spoke.headers)
    async with sessions() as session:
        beat = await session.scalar(select(ClusterRow.last_heartbeat_at).where(ClusterRow.name == "eu-1"))
    assert beat is not None

    steps = [(0.5, "healthy"), (1.0, None), (3.0, "degraded"), (3.5, None), (5.0, "offline"), (50.0, None)]
    for offset, changed_to in steps:
        now = beat + timedelta(seconds=offset)
        with capture_logs() as logs:
            transitions = await sweep_health(sessions, hub_settings, now)
        changes = [e for e in logs if e["event"] == "federation_cluster_health_changed"]
        if changed_to is None:
            assert transitions == []
            assert changes == []
        else:
            [t] = transitions
            assert (t.cluster, t.after.value) == ("eu-1", changed_to)
            [entry] = changes
            assert entry["cluster"] == "eu-1"
            assert entry["after"] == changed_to
            async with sessions() as session:
                row = (await session.scalars(select(ClusterRow).where(ClusterRow.name == "eu-1"))).one()
            assert row.health == changed_to
            assert row.health_changed_at == now
        assert gauge("pending") == 1  # "never" never registered

    assert gauge("offline") == 1
    assert gauge("healthy") == 0
    assert gauge("degraded") == 0

    # back: the next heartbeat and sweep make it healthy again
    await _beat(hub_client, spoke.headers)
    [t] = await sweep_health(sessions, hub_settings, datetime.now(UTC))
    assert (t.before, t.after) == ("offline", ClusterHealth.HEALTHY)
    assert gauge("healthy") == 1
    assert gauge("offline") == 0


async def test_only_the_lock_holder_writes_transitions(
    hub_client: httpx.AsyncClient, hub_app: Any, hub_settings: FederationSettings
) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    await _beat(hub_client, spoke.headers)
    async with hub_app.state.engine.connect() as other_replica:
        assert await other_replica.scalar(select(func.pg_try_advisory_lock(SWEEP_LOCK_KEY)))
        try:
            assert await sweep_health(hub_app.state.sessions, hub_settings, datetime.now(UTC)) == []
            assert gauge("healthy") == 1  # gauges from what it read, all the same
        finally:
            await other_replica.scalar(select(func.pg_advisory_unlock(SWEEP_LOCK_KEY)))
    [t] = await sweep_health(hub_app.state.sessions, hub_settings, datetime.now(UTC))
    assert t.after is ClusterHealth.HEALTHY


async def test_reads_derive_health_between_sweeps(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    assert (await _beat(hub_client, spoke.headers))["health"] == "healthy"
    view = (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()
    assert view["health"] == "healthy"
    async with hub_app.state.sessions() as session:
        past = datetime.now(UTC) - timedelta(seconds=3)
        await session.execute(
            update(ClusterRow)
            .where(ClusterRow.name == "eu-1")
            .values(last_heartbeat_at=past, registered_at=past)
        )
        await session.commit()
    assert (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()["health"] == "degraded"
    async with hub_app.state.sessions() as session:
        past = datetime.now(UTC) - timedelta(seconds=5)
        await session.execute(
            update(ClusterRow)
            .where(ClusterRow.name == "eu-1")
            .values(last_heartbeat_at=past, registered_at=past)
        )
        await session.commit()
    [view] = (await hub_client.get("/v1/clusters", headers=READ_HEADERS)).json()
    assert view["health"] == "offline"
    assert view["health_changed_at"] is None


async def test_a_failed_policy_degrades_and_shows_in_the_matrix(hub_client: httpx.AsyncClient) -> None:
    spoke = await register_spoke(hub_client, "eu-1", {"env": "prod"})
    created = await hub_client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    assert created.status_code == 201, created.text
    policy_id = created.json()["id"]
    pulled = (await hub_client.get("/federation/v1/policies", headers=spoke.headers)).json()
    [placed] = pulled["policies"]

    ack = await _beat(hub_client, spoke.headers)
    assert ack["health"] == "healthy"
    assert ack["policies_etag"] == pulled["etag"]
    view = (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()
    assert view["policies"][policy_id]["state"] == "pending"

    status = {
        "policy_id": policy_id,
        "generation": placed["generation"],
        "content_hash": placed["content_hash"],
        "state": "failed",
        "message": "the cluster refused it",
        "observed_at": datetime.now(UTC).isoformat(),
    }
    ack = await _beat(hub_client, spoke.headers, policies=[status])
    assert ack["health"] == "degraded"
    view = (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()
    cell = view["policies"][policy_id]
    assert view["health"] == "degraded"
    assert cell["state"] == "failed"
    assert cell["message"] == "the cluster refused it"

    ack = await _beat(hub_client, spoke.headers, policies=[{**status, "state": "applied", "message": None}])
    assert ack["health"] == "healthy"
    view = (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()
    assert view["health"] == "healthy"
    assert view["policies"][policy_id]["in_sync"] is True
