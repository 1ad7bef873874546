"""Commands end to end: an operator acts on a spoke's response action through the hub, a fake
spoke long-polls, answers, and the operator's request returns the spoke's status and body."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from qcdr_common.contracts.federation.v1 import ClusterHeartbeat
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.commands.models import CommandRow
from qcdr_federation.hub.install import expire_commands
from qcdr_federation.settings import FederationSettings
from sqlalchemy import update

from tests.federation.conftest import (
    READ_HEADERS,
    WRITE_HEADERS,
    RegisteredSpoke,
    declare_cluster,
    make_hub_settings,
    register_spoke,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]

WAIT_S = 1.0


# where a test shows that a request does NOT wait, or needs an answer within the hub's wait: a
# wait long enough that a busy machine's slowness (3 test workers on 2 cores) cannot be mistaken
# for it, nor run past it
LONG_WAIT_S = 30.0


@pytest.fixture
def hub_settings(
    request: pytest.FixtureRequest, federation_db: str, redis_url: str, redis_prefix: str
) -> FederationSettings:
    """``command_wait_s``: WAIT_S, or the test's parameter (indirect); redelivery after LONG_WAIT_S."""
    wait = getattr(request, "param", WAIT_S)
    return make_hub_settings(
        federation_db, redis_url, redis_prefix, command_wait_s=wait, command_redeliver_s=LONG_WAIT_S
    )


async def online_spoke(client: httpx.AsyncClient, name: str = "eu-1", **heartbeat: Any) -> RegisteredSpoke:
    spoke = await register_spoke(client, name)
    body = ClusterHeartbeat(sent_at=datetime.now(UTC), **heartbeat).model_dump(mode="json")
    assert (
        await client.post("/federation/v1/heartbeat", json=body, headers=spoke.headers)
    ).status_code == 200
    return spoke


async def fake_spoke(
    client: httpx.AsyncClient, spoke: RegisteredSpoke, answer: Any, *, count: int = 1
) -> list[dict[str, Any]]:
    """Long-poll for commands and answer each with ``answer(command) -> (status, body)``."""
    seen: list[dict[str, Any]] = []
    while len(seen) < count:
        response = await client.get("/federation/v1/commands", params={"wait": 5}, headers=spoke.headers)
        assert response.status_code == 200, response.text
        for command in response.json()["items"]:
            seen.append(command)
            status, body = answer(command)
            result = await client.post(
                f"/federation/v1/commands/{command['id']}/result",
                json={"status_code": status, "body": body},
                headers=spoke.headers,
            )
            assert result.status_code == 204, result.text
    return seen


@pytest.mark.parametrize("hub_settings", [LONG_WAIT_S], indirect=True)
async def test_approve_round_trip(hub_client: httpx.AsyncClient) -> None:
    spoke = await online_spoke(hub_client)

    def approve(command: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"id": int(command["action_id"]), "state": "approved", "note": command["reason"]}

    task = asyncio.create_task(fake_spoke(hub_client, spoke, approve))
    await asyncio.sleep(0.1)  # the spoke is waiting in its long poll
    started = time.monotonic()
    response = await hub_client.post(
        "/v1/clusters/eu-1/actions/42/approve", json={"note": "looks right"}, headers=WRITE_HEADERS
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json() == {"id": 42, "state": "approved", "note": "looks right"}
    assert elapsed < LONG_WAIT_S / 3  # woken by the answer, not by the timeout
    [command] = await asyncio.wait_for(task, LONG_WAIT_S)
    assert command["kind"] == "approve"
    assert command["action_id"] == "42"
    assert command["requested_by"] == "qcdr-api-token"
    assert command["lease_s"] is None

    command_id = response.headers["x-federation-command"]
    stored = (await hub_client.get(f"/v1/commands/{command_id}", headers=READ_HEADERS)).json()
    assert stored["state"] == "done"
    assert stored["status_code"] == 200
    assert stored["cluster"] == "eu-1"
    assert stored["result"]["state"] == "approved"


# the answers must come back within the hub's wait, or the operator gets a 202 instead
@pytest.mark.parametrize("hub_settings", [LONG_WAIT_S], indirect=True)
async def test_errors_and_renew_leases_pass_through(hub_client: httpx.AsyncClient) -> None:
    spoke = await online_spoke(hub_client)
    problem = {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "not pending",
        "reason": "conflict",
    }
    task = asyncio.create_task(fake_spoke(hub_client, spoke, lambda c: (409, problem)))
    response = await hub_client.post("/v1/clusters/eu-1/actions/7/reject", headers=WRITE_HEADERS)
    assert response.status_code == 409
    assert response.json() == problem
    assert response.headers["content-type"].startswith("application/problem+json")
    await asyncio.wait_for(task, LONG_WAIT_S)

    task = asyncio.create_task(fake_spoke(hub_client, spoke, lambda c: (200, {"lease": c["lease_s"]})))
    response = await hub_client.post(
        "/v1/clusters/eu-1/actions/7/renew", json={"lease": "15m"}, headers=WRITE_HEADERS
    )
    assert response.json() == {"lease": 900}
    [command] = await asyncio.wait_for(task, LONG_WAIT_S)
    assert command["kind"] == "renew"
    assert command["lease_s"] == 900

    task = asyncio.create_task(fake_spoke(hub_client, spoke, lambda c: (204, None)))
    response = await hub_client.post("/v1/clusters/eu-1/actions/7/undo", headers=WRITE_HEADERS)
    assert response.status_code == 204
    assert response.content == b""
    await asyncio.wait_for(task, LONG_WAIT_S)


async def test_no_answer_in_time_is_202_and_the_answer_comes_later(hub_client: httpx.AsyncClient) -> None:
    spoke = await online_spoke(hub_client)
    started = time.monotonic()
    response = await hub_client.post("/v1/clusters/eu-1/actions/9/approve", headers=WRITE_HEADERS)
    # at the end of the wait, not later (the slack is for a busy machine, not for the hub)
    assert WAIT_S <= time.monotonic() - started < WAIT_S + 5
    assert response.status_code == 202
    body = response.json()
    command_id = body["command"]["id"]
    assert body["command"]["state"] == "pending"
    assert response.headers["location"] == f"/v1/commands/{command_id}"

    # the spoke comes by later, answers; the first answer stands
    await fake_spoke(hub_client, spoke, lambda c: (200, {"ok": True}))
    again = await hub_client.post(
        f"/federation/v1/commands/{command_id}/result",
        json={"status_code": 500, "body": None},
        headers=spoke.headers,
    )
    assert again.status_code == 204
    stored = (await hub_client.get(f"/v1/commands/{command_id}", headers=READ_HEADERS)).json()
    assert stored["state"] == "done"
    assert stored["status_code"] == 200
    assert stored["result"] == {"ok": True}


@pytest.mark.parametrize("hub_settings", [LONG_WAIT_S], indirect=True)
async def test_offline_or_unregistered_clusters_queue_at_once(
    hub_client: httpx.AsyncClient, hub_app: Any
) -> None:
    await declare_cluster(hub_client, "never-registered")
    started = time.monotonic()
    response = await hub_client.post("/v1/clusters/never-registered/actions/1/approve", headers=WRITE_HEADERS)
    assert response.status_code == 202
    assert time.monotonic() - started < LONG_WAIT_S / 6
    assert "offline" in response.json()["detail"]

    spoke = await online_spoke(hub_client, "eu-1")
    async with hub_app.state.sessions() as session:
        past = datetime.now(UTC) - timedelta(minutes=10)
        await session.execute(
            update(ClusterRow)
            .where(ClusterRow.name == "eu-1")
            .values(last_heartbeat_at=past, registered_at=past)
        )
        await session.commit()
    started = time.monotonic()
    response = await hub_client.post("/v1/clusters/eu-1/actions/1/approve", headers=WRITE_HEADERS)
    assert response.status_code == 202
    assert time.monotonic() - started < LONG_WAIT_S / 6
    # the heartbeat says a command waits; the spoke picks it up when it is back
    body = ClusterHeartbeat(sent_at=datetime.now(UTC)).model_dump(mode="json")
    ack = await hub_client.post("/federation/v1/heartbeat", json=body, headers=spoke.headers)
    assert ack.json()["commands_pending"] == 1
    polled = await hub_client.get("/federation/v1/commands", headers=spoke.headers)
    assert [c["action_id"] for c in polled.json()["items"]] == ["1"]


async def test_unanswered_deliveries_come_again_and_old_commands_expire(
    hub_client: httpx.AsyncClient, hub_app: Any, hub_settings: FederationSettings
) -> None:
    spoke = await online_spoke(hub_client)
    await declare_cluster(hub_client, "us-1")
    queued = await hub_client.post("/v1/clusters/us-1/actions/5/approve", headers=WRITE_HEADERS)
    assert queued.status_code == 202  # us-1 never registered
    response = await hub_client.post("/v1/clusters/eu-1/actions/5/approve", headers=WRITE_HEADERS)
    assert response.status_code == 202
    command_id = response.json()["command"]["id"]

    first = (await hub_client.get("/federation/v1/commands", headers=spoke.headers)).json()["items"]
    assert [c["id"] for c in first] == [command_id]  # not us-1's command
    # delivered, not answered: not handed out again before the redelivery time (30 s here)...
    assert (await hub_client.get("/federation/v1/commands", headers=spoke.headers)).json()["items"] == []

    # ...but once it has passed (the delivery moved back beyond it), within the long poll
    async def delivery_overdue() -> None:
        await asyncio.sleep(0.3)  # the long poll is waiting
        async with hub_app.state.sessions() as session:
            overdue = datetime.now(UTC) - timedelta(seconds=hub_settings.command_redeliver_s + 1)
            await session.execute(
                update(CommandRow).where(CommandRow.id == command_id).values(delivered_at=overdue)
            )
            await session.commit()

    moved = asyncio.create_task(delivery_overdue())
    started = time.monotonic()
    again = (
        await hub_client.get("/federation/v1/commands", params={"wait": LONG_WAIT_S}, headers=spoke.headers)
    ).json()
    await moved
    assert [c["id"] for c in again["items"]] == [command_id]
    assert time.monotonic() - started < LONG_WAIT_S / 3  # not at the end of the long poll
    state = (await hub_client.get(f"/v1/commands/{command_id}", headers=READ_HEADERS)).json()["state"]
    assert state == "delivered"

    # another cluster cannot answer it
    other = await register_spoke(hub_client, "ap-1")
    response = await hub_client.post(
        f"/federation/v1/commands/{command_id}/result", json={"status_code": 200}, headers=other.headers
    )
    assert response.status_code == 404

    # past its time to live it expires and is never handed out again
    later = datetime.now(UTC) + timedelta(seconds=hub_settings.command_ttl_s + 1)
    assert await expire_commands(hub_app.state.sessions, hub_settings, later) == 2
    assert (await hub_client.get(f"/v1/commands/{command_id}", headers=READ_HEADERS)).json()[
        "state"
    ] == "expired"


async def test_long_poll_returns_as_soon_as_a_command_is_queued(hub_client: httpx.AsyncClient) -> None:
    spoke = await online_spoke(hub_client)

    async def poll() -> tuple[float, list[dict[str, Any]]]:
        started = time.monotonic()
        response = await hub_client.get(
            "/federation/v1/commands", params={"wait": LONG_WAIT_S}, headers=spoke.headers
        )
        return time.monotonic() - started, response.json()["items"]

    task = asyncio.create_task(poll())
    await asyncio.sleep(0.3)
    operator = asyncio.create_task(
        hub_client.post("/v1/clusters/eu-1/actions/3/approve", headers=WRITE_HEADERS)
    )
    elapsed, items = await task
    assert [c["action_id"] for c in items] == ["3"]
    assert elapsed < LONG_WAIT_S / 3  # not at the end of the long poll
    assert (await operator).status_code == 202  # nobody answered


async def test_bad_requests(hub_client: httpx.AsyncClient) -> None:
    await online_spoke(hub_client)
    assert (
        await hub_client.post("/v1/clusters/nope/actions/1/approve", headers=WRITE_HEADERS)
    ).status_code == 404
    assert (
        await hub_client.post("/v1/clusters/eu-1/actions/1/explode", headers=WRITE_HEADERS)
    ).status_code == 422
    response = await hub_client.post(
        "/v1/clusters/eu-1/actions/1/approve", json={"lease": 60}, headers=WRITE_HEADERS
    )
    assert response.status_code == 422
    assert response.json()["reason"] == "invalid_lease"
    response = await hub_client.post(
        "/v1/clusters/eu-1/actions/1/renew", json={"lease": "forever"}, headers=WRITE_HEADERS
    )
    assert response.status_code == 422
    response = await hub_client.post("/v1/clusters/eu-1/actions/1/approve", headers=READ_HEADERS)
    assert response.status_code == 403
    assert (await hub_client.get("/v1/commands/cmd-nope", headers=READ_HEADERS)).status_code == 404


async def test_actions_from_the_last_heartbeat(hub_client: httpx.AsyncClient) -> None:
    action = {
        "action_id": "12",
        "action": "kill_process",
        "state": "pending_approval",
        "target": {"pod": "web-1"},
        "finding_id": "fnd-1",
        "requested_at": datetime(2026, 12, 1, tzinfo=UTC).isoformat(),
        "playbook": "contain",  # extra fields are kept
    }
    await online_spoke(hub_client, actions=[action])
    body = (await hub_client.get("/v1/clusters/eu-1/actions", headers=READ_HEADERS)).json()
    assert body["cluster_name"] == "eu-1"
    assert body["reported_at"] is not None
    [item] = body["items"]
    assert item["action_id"] == "12"
    assert item["target"] == {"pod": "web-1"}
    assert item["playbook"] == "contain"
    assert (await hub_client.get("/v1/clusters/nope/actions", headers=READ_HEADERS)).status_code == 404
