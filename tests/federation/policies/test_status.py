"""Apply status: spokes' reports stored one row per (policy, cluster), older reports ignored,
unknown policies ignored; the cluster × policy matrix, the per-policy ``/status`` view, and
``qualys_federation_syncs_total`` counted once per (policy, cluster, generation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from qcdr_common.contracts.federation.v1 import PolicyApplyState, PolicyApplyStatus
from qcdr_federation.hub.policies import service
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS
from tests.federation.policies.conftest import Clusters, policy_body, spoke, tracing_policy

pytestmark = [pytest.mark.db, pytest.mark.redis]

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(federation_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(federation_db, poolclass=NullPool)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def syncs(outcome: str) -> float:
    return REGISTRY.get_sample_value("qualys_federation_syncs_total", {"outcome": outcome}) or 0.0


def report(
    policy_id: str, generation: int, content_hash: str, state: str, *, at: int = 0, message: str | None = None
) -> dict[str, Any]:
    return {
        "policy_id": policy_id,
        "generation": generation,
        "content_hash": content_hash,
        "state": state,
        "message": message,
        "observed_at": (T0 + timedelta(seconds=at)).isoformat(),
    }


async def post(client: httpx.AsyncClient, cluster: str, *items: dict[str, Any]) -> None:
    response = await client.post(
        "/federation/v1/status", json={"policies": list(items)}, headers=spoke(cluster)
    )
    assert response.status_code == 204, response.text


async def status_of(client: httpx.AsyncClient, policy_id: str) -> dict[str, dict[str, Any]]:
    response = await client.get(f"/v1/federated-policies/{policy_id}/status", headers=READ_HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == policy_id
    return {c["cluster"]: c for c in body["clusters"]}


async def desired_hash(client: httpx.AsyncClient, cluster: str) -> str:
    response = await client.get("/federation/v1/policies", headers=spoke(cluster))
    content_hash: str = response.json()["policies"][0]["content_hash"]
    return content_hash


async def test_reports_status_view_and_matrix(
    client: httpx.AsyncClient, clusters: Clusters, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    await clusters.add("us-1", {"env": "prod"})
    await clusters.add("st-1", {"env": "staging"})
    created = (await client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)).json()
    pid = created["id"]
    eu_hash = await desired_hash(client, "eu-1")

    view = await status_of(client, pid)
    assert set(view) == {"eu-1", "us-1"}  # placed ones; st-1 neither placed nor reporting
    assert view["us-1"]["state"] == "pending"
    assert view["us-1"]["in_sync"] is False
    assert view["us-1"]["placed"] is True
    assert view["us-1"]["generation"] is None

    succeeded = syncs("succeeded")
    await post(client, "eu-1", report(pid, 1, eu_hash, "proposed", at=1))
    await post(client, "eu-1", report(pid, 1, eu_hash, "applied", at=2))
    await post(client, "us-1", report(pid, 1, "not-the-hash", "applied", at=2))
    await post(client, "eu-1", report("fp-unknown", 1, "x", "applied"))  # ignored
    assert syncs("succeeded") - succeeded == 2  # eu-1 once (proposed, then applied), us-1 once

    view = await status_of(client, pid)
    eu = view["eu-1"]
    assert (eu["state"], eu["generation"], eu["content_hash"], eu["desired_hash"], eu["in_sync"]) == (
        "applied",
        1,
        eu_hash,
        eu_hash,
        True,
    )
    assert datetime.fromisoformat(eu["observed_at"]) == T0 + timedelta(seconds=2)
    assert (view["us-1"]["state"], view["us-1"]["in_sync"]) == ("applied", False)  # wrong hash

    async with sessions() as session:
        matrix = await service.status_matrix(session)
    assert set(matrix) == {"eu-1", "us-1", "st-1"}
    assert matrix["st-1"] == {}
    cell = matrix["eu-1"][pid]
    assert (cell.name, cell.desired_generation, cell.generation, cell.state, cell.in_sync) == (
        "no-ptrace",
        1,
        1,
        PolicyApplyState.APPLIED,
        True,
    )
    assert matrix["us-1"][pid].in_sync is False

    # a new generation: eu-1 is behind until it reports it
    changed = await client.put(
        f"/v1/federated-policies/{pid}",
        json=policy_body(template=tracing_policy(action="Post")),
        headers=WRITE_HEADERS,
    )
    assert changed.json()["generation"] == 2
    async with sessions() as session:
        cell = (await service.status_matrix(session))["eu-1"][pid]
    assert (cell.desired_generation, cell.generation, cell.in_sync) == (2, 1, False)

    failed = syncs("failed")
    new_hash = await desired_hash(client, "eu-1")
    await post(client, "eu-1", report(pid, 2, new_hash, "failed", at=3, message="validation: no such kprobe"))
    await post(
        client, "eu-1", report(pid, 1, eu_hash, "applied", at=4)
    )  # a late report of the old generation
    await post(client, "eu-1", report(pid, 2, new_hash, "failed", at=5, message="validation: no such kprobe"))
    assert syncs("failed") - failed == 1
    eu = (await status_of(client, pid))["eu-1"]
    assert (eu["generation"], eu["state"], eu["message"]) == (2, "failed", "validation: no such kprobe")
    assert eu["in_sync"] is True  # in step with the generation; its state says it failed
    async with sessions() as session:
        assert await service.clusters_with_failed_policies(session) == {"eu-1"}

    # off eu-1 by placement: it stays listed (it reported) until it says the policy is revoked
    excluded = policy_body(template=tracing_policy(action="Post"))
    excluded["placement"]["excluded_clusters"] = ["eu-1"]
    await client.put(f"/v1/federated-policies/{pid}", json=excluded, headers=WRITE_HEADERS)
    eu = (await status_of(client, pid))["eu-1"]
    assert (eu["placed"], eu["desired_hash"], eu["in_sync"]) == (False, None, False)
    async with sessions() as session:  # the failure was of an older generation now
        assert await service.clusters_with_failed_policies(session) == set()
    await post(client, "eu-1", report(pid, 3, "whatever", "revoked", at=6))
    eu = (await status_of(client, pid))["eu-1"]
    assert (eu["placed"], eu["state"], eu["in_sync"]) == (False, "revoked", True)


async def test_older_and_repeated_reports(
    client: httpx.AsyncClient, clusters: Clusters, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cluster_id = await clusters.add("eu-1", {"env": "prod"})
    pid = (await client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)).json()[
        "id"
    ]
    content_hash = await desired_hash(client, "eu-1")

    def status(state: str, at: int) -> PolicyApplyStatus:
        return PolicyApplyStatus.model_validate(report(pid, 1, content_hash, state, at=at))

    async with sessions() as session:
        # one batch mentioning the policy twice: the newest observation wins
        await service.record_statuses(
            session, cluster_id, [status("applied", 5), status("proposed", 1)], full=True
        )
        await session.commit()
    first = (await status_of(client, pid))["eu-1"]
    assert first["state"] == "applied"
    async with sessions() as session:
        # older than stored (same generation): ignored
        await service.record_statuses(session, cluster_id, [status("proposed", 3)], full=False)
        # a heartbeat repeating the same status later: nothing to write
        await service.record_statuses(session, cluster_id, [status("applied", 9)], full=True)
        await session.commit()
    again = (await status_of(client, pid))["eu-1"]
    assert again == first


async def test_render_failure_shows_in_the_status(client: httpx.AsyncClient, clusters: Clusters) -> None:
    body = policy_body(
        overrides=[{"cluster_name": "eu-2", "patches": [{"op": "remove", "path": "/spec/nope"}]}]
    )
    pid = (await client.post("/v1/federated-policies", json=body, headers=WRITE_HEADERS)).json()["id"]
    await clusters.add("eu-2", {"env": "prod"})  # declared after the policy: its patch cannot apply
    await clusters.add("eu-3", {"env": "prod"})
    pulled = await client.get("/federation/v1/policies", headers=spoke("eu-2"))
    assert pulled.json()["policies"] == []
    view = await status_of(client, pid)
    assert (view["eu-2"]["placed"], view["eu-2"]["state"], view["eu-2"]["in_sync"]) == (True, "failed", False)
    assert "cannot render" in view["eu-2"]["message"]
    assert view["eu-3"]["state"] == "pending"


async def test_a_report_dated_in_the_future_is_stored_at_the_hubs_time(
    client: httpx.AsyncClient, clusters: Clusters
) -> None:
    """A spoke whose clock runs ahead cannot date a status past the hub's clock: kept at the hub's
    time, it does not win over the spoke's later reports once its clock is right again."""
    await clusters.add("eu-1", {"env": "prod"})
    created = await client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    pid = created.json()["id"]
    content_hash = await desired_hash(client, "eu-1")
    before = datetime.now(UTC)
    await post(
        client, "eu-1", {**report(pid, 1, content_hash, "proposed"), "observed_at": "9999-12-31T23:59:59Z"}
    )
    observed = datetime.fromisoformat((await status_of(client, pid))["eu-1"]["observed_at"])
    assert before <= observed <= datetime.now(UTC)

    await post(
        client,
        "eu-1",
        {**report(pid, 1, content_hash, "applied"), "observed_at": datetime.now(UTC).isoformat()},
    )
    assert (await status_of(client, pid))["eu-1"]["state"] == "applied"
