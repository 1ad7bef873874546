"""The spoke agent against the real hub app served on 127.0.0.1 (its own database; the spoke has
another), one real Redis with a prefix per stack: registration and heartbeats, policies placed,
updated and removed arriving on the spoke's ``federation:policies``, apply statuses reported back,
a hub that goes away and comes back, a restart that catches up, a wrong bootstrap token."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import POLICIES_STREAM, POLICY_PLACED, POLICY_REMOVED
from qcdr_common.db import make_session_factory
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.agent import run_agent
from qcdr_federation.spoke.runtime import HUB_UNREACHABLE, REGISTRATION, AgentState
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.conftest import WRITE_HEADERS, bootstrap_token, declare_cluster, make_hub_settings
from tests.federation.spoke.conftest import (
    FakeResponseApi,
    HubServer,
    create_shared_profiles_view,
    eventually,
    make_spoke_settings,
    read_stream,
    running_agent,
)

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

POLICIES_URL = "/v1/federated-policies"
# a spoke's pulls held this long (the hub's long_poll_max_s caps them too, so the hub below is set
# to the same): a change reaches a spoke whose held pull is woken within seconds, one that only
# re-polled would see it at the end of the hold. The margin is wide because CI runs this beside
# two other workers on two cores: one run saw this process stall for ~18 s in all (three Redis
# reads timed out, the spoke went offline at the hub) and then the woken pull delivered it.
HOLD_S = 60.0
WOKEN_S = HOLD_S / 3


@pytest.fixture
def hub_settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    return make_hub_settings(
        federation_db,
        redis_url,
        redis_prefix,
        heartbeat_interval_s=0.3,
        degraded_after_s=3.0,
        offline_after_s=6.0,
        health_sweep_s=0.2,
        rollout_interval_s=0.2,
        long_poll_max_s=HOLD_S,
    )


def tracing_policy(name: str = "block-ptrace", action: str = "Sigkill") -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {
            "kprobes": [
                {"call": "sys_ptrace", "syscall": True, "selectors": [{"matchActions": [{"action": action}]}]}
            ]
        },
    }


def policy_body(name: str = "no-ptrace", action: str = "Sigkill", **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "template": tracing_policy(action=action),
        "placement": {"cluster_selector": {"match_labels": {"env": "prod"}}},
    }
    body.update(extra)
    return body


async def hub(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=20)


def with_response_api(response_api: tuple[FakeResponseApi, str]) -> dict[str, Any]:
    return {"response_url": response_api[1], "response_token": SecretStr(FakeResponseApi.TOKEN)}


async def prepare_spoke(
    client: httpx.AsyncClient,
    spoke_db: str,
    redis_url: str,
    prefix: str,
    hub_url: str,
    response_api: tuple[FakeResponseApi, str],
    name: str = "spoke-a",
    **kw: Any,
) -> FederationSettings:
    await declare_cluster(client, name, {"env": "prod"})
    token = await bootstrap_token(client, name)
    kw.update(with_response_api(response_api))
    return make_spoke_settings(
        spoke_db, redis_url, prefix, hub_url, name, bootstrap_token=SecretStr(token), **kw
    )


async def cluster(client: httpx.AsyncClient, name: str = "spoke-a") -> dict[str, Any]:
    response = await client.get(f"/v1/clusters/{name}", headers=WRITE_HEADERS)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def policy_envelopes(redis: Redis, prefix: str) -> list[Envelope]:
    return await read_stream(redis, prefix, POLICIES_STREAM)


async def report(redis: Redis, prefix: str, placed: Envelope, status: str, reason: str | None = None) -> None:
    """What the response service emits about a federated policy it handled."""
    p = placed.payload
    payload = {
        "policy_id": 7,
        "api_version": p["manifest"]["apiVersion"],
        "kind": p["manifest"]["kind"],
        "namespace": None,
        "name": p["manifest"]["metadata"]["name"],
        "family": "federated",
        "version": 1,
        "from_status": None,
        "to_status": status,
        "reason": reason,
        "federation": {
            "policy_id": p["policy_id"],
            "generation": p["generation"],
            "content_hash": p["content_hash"],
        },
    }
    envelope = new_envelope(
        "response.policy_status_changed",
        payload,
        source="response",
        cluster_id="spoke-a",
        occurred_at=datetime.now(UTC),
    )
    await publish(redis, stream_key(prefix, "response:events"), [envelope], 10_000)


async def test_register_heartbeat_place_update_report_remove(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    response_api: tuple[FakeResponseApi, str],
) -> None:
    async with await hub(hub_server.url) as client:
        settings = await prepare_spoke(
            client, spoke_db, redis_url, spoke_prefix, hub_server.url, response_api, long_poll_max_s=HOLD_S
        )
        async with running_agent(settings, spoke_engine, redis_client) as state:
            # analysis has not published its baselines view yet: a problem the hub hears about
            seen = await eventually(lambda: _problem(client, "analysis_shared_profiles"))
            assert seen["health"] == "degraded"
            assert seen["version"]
            assert state.registered
            await create_shared_profiles_view(spoke_db)
            await eventually(lambda: _healthy(client))

            # created on the hub → placed on the spoke's stream by the held long poll waking up
            # (tens of ms alone; the bound leaves room for a loaded CI machine and stays far
            # under the HOLD_S a poll is held, so a spoke that only re-polled would miss it)
            started = time.monotonic()
            created = await client.post(POLICIES_URL, json=policy_body(), headers=WRITE_HEADERS)
            assert created.status_code == 201, created.text
            policy_id = created.json()["id"]
            first = await eventually(
                lambda: _placed(redis_client, spoke_prefix, 1), within=WOKEN_S, every=0.01
            )
            assert time.monotonic() - started < WOKEN_S
            placed = first[0]
            assert placed.payload["policy_id"] == policy_id
            assert placed.payload["generation"] == 1
            assert placed.payload["cluster"] == "spoke-a"
            assert (
                placed.payload["manifest"]["metadata"]["labels"]["federation.qualys.com/policy-id"]
                == policy_id
            )

            # the spoke's response service proposes, then applies it: the hub sees the state
            await report(redis_client, spoke_prefix, placed, "applied")
            status = await eventually(lambda: _hub_state(client, policy_id, "applied"))
            assert status["in_sync"] is True

            # an update → placed again, generation 2
            updated = await client.put(
                f"{POLICIES_URL}/{policy_id}", json=policy_body(action="Override"), headers=WRITE_HEADERS
            )
            assert updated.status_code == 200, updated.text
            envelopes = await eventually(lambda: _placed(redis_client, spoke_prefix, 2), within=WOKEN_S)
            assert envelopes[1].payload["generation"] == 2
            # a late event about generation 1 changes nothing; the rejection of generation 2 does
            await report(redis_client, spoke_prefix, placed, "revoked")
            await report(
                redis_client, spoke_prefix, envelopes[1], "rejected", reason="selector refused by the cluster"
            )
            failed = await eventually(lambda: _hub_state(client, policy_id, "failed"))
            assert failed["message"] == "selector refused by the cluster"
            assert failed["generation"] == 2

            # deleted on the hub → removed on the spoke
            assert (
                await client.delete(f"{POLICIES_URL}/{policy_id}", headers=WRITE_HEADERS)
            ).status_code == 204
            removed = await eventually(
                lambda: _of_type(redis_client, spoke_prefix, POLICY_REMOVED), within=WOKEN_S
            )
            assert removed[0].payload["policy_id"] == policy_id
            assert removed[0].payload["manifest_name"] == "block-ptrace"
            async with make_session_factory(spoke_engine)() as session:
                assert await repo.held_policies(session) == {}


async def test_a_progressive_rollout_waits_for_the_spoke_to_apply(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    response_api: tuple[FakeResponseApi, str],
) -> None:
    """The real agent pulls, its response service reports applied through the status stream, and
    the hub's rollout loop only then releases the next cluster (declared, never connected)."""
    async with await hub(hub_server.url) as client:
        settings = await prepare_spoke(
            client, spoke_db, redis_url, spoke_prefix, hub_server.url, response_api
        )
        await declare_cluster(client, "spoke-z", {"env": "prod"})
        async with running_agent(settings, spoke_engine, redis_client):
            body = policy_body()
            body["rollout"] = {"strategy": "progressive", "max_concurrency": 1, "order": ["spoke-a"]}
            created = await client.post(POLICIES_URL, json=body, headers=WRITE_HEADERS)
            assert created.status_code == 201, created.text
            policy_id = created.json()["id"]

            # spoke-a first (the canary); spoke-z waits while spoke-a has not applied
            (placed,) = await eventually(lambda: _placed(redis_client, spoke_prefix, 1))
            assert placed.payload["generation"] == 1
            view = await _rollout(client, policy_id)
            assert [(c["cluster"], c["phase"]) for c in view["clusters"]] == [
                ("spoke-a", "updating"),
                ("spoke-z", "waiting"),
            ]

            await report(redis_client, spoke_prefix, placed, "applied")
            view = await eventually(lambda: _rollout_when(client, policy_id, "spoke-z", "updating"))
            assert [(c["cluster"], c["phase"]) for c in view["clusters"]] == [
                ("spoke-a", "done"),
                ("spoke-z", "updating"),
            ]
            assert view["counts"] == {"waiting": 0, "updating": 1, "done": 1, "failed": 0}


async def _rollout(client: httpx.AsyncClient, policy_id: str) -> dict[str, Any]:
    response = await client.get(f"{POLICIES_URL}/{policy_id}/rollout", headers=WRITE_HEADERS)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _rollout_when(
    client: httpx.AsyncClient, policy_id: str, cluster: str, phase: str
) -> dict[str, Any] | None:
    view = await _rollout(client, policy_id)
    found = [c for c in view["clusters"] if c["cluster"] == cluster and c["phase"] == phase]
    return view if found else None


async def test_hub_away_keeps_the_set_then_catches_up_also_after_a_restart(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    response_api: tuple[FakeResponseApi, str],
) -> None:
    await create_shared_profiles_view(spoke_db)
    async with await hub(hub_server.url) as client:
        settings = await prepare_spoke(
            client, spoke_db, redis_url, spoke_prefix, hub_server.url, response_api
        )
        created = await client.post(POLICIES_URL, json=policy_body(), headers=WRITE_HEADERS)
        policy_id = created.json()["id"]
        async with running_agent(settings, spoke_engine, redis_client) as state:
            placed = (await eventually(lambda: _placed(redis_client, spoke_prefix, 1)))[0]
            await eventually(lambda: _healthy(client))

            hub_server.stop()
            await eventually(lambda: _has(state, HUB_UNREACHABLE))
            assert not state.hub_up
            async with make_session_factory(spoke_engine)() as session:
                assert set(await repo.held_policies(session)) == {policy_id}  # the last good set stands
            # the response service goes on meanwhile: its word reaches the hub once it is back
            await report(redis_client, spoke_prefix, placed, "applied")

            hub_server.start()
            await eventually(lambda: _hub_state(client, policy_id, "applied"))
            await eventually(lambda: _healthy(client))
            # the hub records a heartbeat before it answers: the agent learns of the contact after
            await eventually(lambda: _async(HUB_UNREACHABLE not in state.problems))
            assert len(await policy_envelopes(redis_client, spoke_prefix)) == 1  # nothing placed twice

        # the spoke is down while the policy changes; after its restart it catches up once
        updated = await client.put(
            f"{POLICIES_URL}/{policy_id}", json=policy_body(action="Override"), headers=WRITE_HEADERS
        )
        assert updated.status_code == 200
        async with running_agent(settings, spoke_engine, redis_client):
            envelopes = await eventually(lambda: _placed(redis_client, spoke_prefix, 2))
            assert envelopes[1].payload["generation"] == 2
            await eventually(lambda: _healthy(client))
        assert len(await policy_envelopes(redis_client, spoke_prefix)) == 2


async def test_a_wrong_bootstrap_token_is_retried_and_nothing_crashes(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    response_api: tuple[FakeResponseApi, str],
) -> None:
    await create_shared_profiles_view(spoke_db)
    async with await hub(hub_server.url) as client:
        await declare_cluster(client, "spoke-a", {"env": "prod"})
        token_file = tmp_path / "token"
        token_file.write_text("bt-not.a-real-token")
        settings = make_spoke_settings(
            spoke_db,
            redis_url,
            spoke_prefix,
            hub_server.url,
            bootstrap_token_file=token_file,
            **with_response_api(response_api),
        )
        async with running_agent(settings, spoke_engine, redis_client) as state:
            await eventually(lambda: _has(state, REGISTRATION))
            await eventually(lambda: _async("invalid_bootstrap_token" in state.problems[REGISTRATION]))
            assert (await cluster(client))["health"] == "pending"
            assert "federation_register_failed" in capfd.readouterr().err
            token_file.write_text(await bootstrap_token(client, "spoke-a"))
            await eventually(lambda: _healthy(client))
            # the hub counts the registration as a heartbeat, so it can say healthy before the
            # agent has stored the credential and cleared its problem: wait for the agent too
            await eventually(lambda: _async(REGISTRATION not in state.problems))
    out = capfd.readouterr()
    assert "bt-not.a-real-token" not in out.err + out.out


# --------------------------------------------------------------------------- helpers


async def _async(value: Any) -> Any:
    return value


async def _has(state: AgentState, problem: str) -> bool:
    return problem in state.problems


async def _problem(client: httpx.AsyncClient, text: str) -> dict[str, Any] | None:
    seen = await cluster(client)
    return seen if any(text in p for p in seen["problems"]) else None


async def _healthy(client: httpx.AsyncClient) -> bool:
    return bool((await cluster(client))["health"] == "healthy")


async def _of_type(redis: Redis, prefix: str, type_: str) -> list[Envelope]:
    return [e for e in await policy_envelopes(redis, prefix) if e.type == type_]


async def _placed(redis: Redis, prefix: str, count: int) -> list[Envelope] | None:
    placed = await _of_type(redis, prefix, POLICY_PLACED)
    return placed if len(placed) >= count else None


async def _hub_state(client: httpx.AsyncClient, policy_id: str, state: str) -> dict[str, Any] | None:
    response = await client.get(f"{POLICIES_URL}/{policy_id}/status", headers=WRITE_HEADERS)
    assert response.status_code == 200, response.text
    for row in response.json()["clusters"]:
        if row["cluster"] == "spoke-a" and row["state"] == state:
            return dict(row)
    return None


async def test_rotation_and_revocation_asked_by_the_hub(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    response_api: tuple[FakeResponseApi, str],
) -> None:
    await create_shared_profiles_view(spoke_db)
    sessions = make_session_factory(spoke_engine)

    async def credential() -> tuple[str | None, str | None]:
        async with sessions() as session:
            row = await repo.get_state(session)
        return (row.credential_id, row.credential) if row is not None else (None, None)

    async with await hub(hub_server.url) as client:
        await declare_cluster(client, "spoke-a", {"env": "prod"})
        token_file = tmp_path / "token"
        token_file.write_text(await bootstrap_token(client, "spoke-a"))
        settings = make_spoke_settings(
            spoke_db,
            redis_url,
            spoke_prefix,
            hub_server.url,
            bootstrap_token_file=token_file,
            **with_response_api(response_api),
        )
        syncs_before = _sample("qcdr_federation_spoke_syncs_total", {"outcome": "changed"})
        async with running_agent(settings, spoke_engine, redis_client) as state:
            await eventually(lambda: _healthy(client))
            await eventually(lambda: _async(state.registered))  # the credential is stored by now
            first_id, first_secret = await credential()
            assert first_id is not None

            asked = await client.post("/v1/clusters/spoke-a/credentials/rotate", headers=WRITE_HEADERS)
            assert asked.status_code == 202, asked.text

            async def rotated() -> bool:
                return (await credential())[0] not in (None, first_id) and not (await cluster(client))[
                    "rotate_requested"
                ]

            await eventually(rotated)
            second_id, second_secret = await credential()
            await eventually(lambda: _healthy(client))

            revoked = await client.post("/v1/clusters/spoke-a/credentials/revoke", headers=WRITE_HEADERS)
            assert revoked.status_code == 200, revoked.text
            await eventually(lambda: _async(not state.registered))
            await eventually(lambda: _async(REGISTRATION in state.problems))
            token_file.write_text(await bootstrap_token(client, "spoke-a"))
            await eventually(lambda: _async(state.registered))
            third_id, _ = await credential()
            assert third_id not in (None, first_id, second_id)
            await eventually(lambda: _healthy(client))
            await eventually(lambda: _async(_sample("qcdr_federation_spoke_hub_up", {}) == 1.0))
            assert (_sample("qcdr_federation_spoke_syncs_total", {"outcome": "changed"}) or 0) > (
                syncs_before or 0
            )
    logged = capfd.readouterr()
    assert "federation_credential_refused" in logged.err
    for secret in (first_secret, second_secret):
        assert secret is not None
        assert secret.split(".", 1)[1] not in logged.err + logged.out


def _sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_the_agent_stops_promptly_while_the_hub_holds_its_long_polls(
    hub_server: HubServer,
    spoke_engine: AsyncEngine,
    spoke_db: str,
    redis_url: str,
    spoke_prefix: str,
    redis_client: Redis,
    response_api: tuple[FakeResponseApi, str],
) -> None:
    async with await hub(hub_server.url) as client:
        settings = await prepare_spoke(
            client, spoke_db, redis_url, spoke_prefix, hub_server.url, response_api, long_poll_max_s=HOLD_S
        )
        state = AgentState.from_settings(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(settings, spoke_engine, redis_client, stop, state=state))
        await eventually(lambda: _async(state.registered))
        await asyncio.sleep(0.5)  # the policy and command pulls are now held open by the hub
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 2 * HOLD_S)
        assert time.monotonic() - started < HOLD_S / 3  # not held until the hub answers the pulls
