"""The spoke pull: ETag and 304, the long poll, and who gets woken. A placed policy's change
reaches a waiting spoke within a fraction of a second (on this replica, and on another one through
Redis pub/sub); a spoke whose set did not change is not woken; a cluster relabelled gets its new
set; the periodic fingerprint check catches up with changes nobody announced."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from qcdr_common.contracts.federation.v1 import LABEL_POLICY_ID, PlacedPolicySet
from qcdr_federation.hub.policies.notify import notify_placements_changed
from qcdr_federation.hub.policies.spoke_router import parse_if_none_match
from qcdr_federation.settings import FederationSettings

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS
from tests.federation.policies.conftest import (
    HOLD_S,
    Clusters,
    policies_app,
    policy_body,
    running,
    spoke,
    tracing_policy,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]

PULL = "/federation/v1/policies"
# a woken pull answers within this (tens of ms alone); far below the HOLD_S a pull is held and the
# 30 s re-check, so a pull that was not woken fails it, and a busy machine does not
WAKE_S = HOLD_S / 3


async def pull(
    client: httpx.AsyncClient, cluster: str, etag: str | None = None, wait: float = 0
) -> httpx.Response:
    headers = spoke(cluster)
    if etag is not None:
        headers["If-None-Match"] = f'"{etag}"'
    return await client.get(PULL, params={"wait": wait}, headers=headers)


def placed(response: httpx.Response) -> PlacedPolicySet:
    assert response.status_code == 200, response.text
    body = PlacedPolicySet.model_validate(response.json())
    assert response.headers["ETag"] == f'"{body.etag}"'
    return body


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/federated-policies", json=body, headers=WRITE_HEADERS)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def timed(coro: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await coro
    return response, time.monotonic() - started


def test_if_none_match_forms() -> None:
    assert parse_if_none_match('"abc"') == {"abc"}
    assert parse_if_none_match('W/"abc", "def"') == {"abc", "def"}
    assert parse_if_none_match("abc") == {"abc"}
    assert parse_if_none_match("*") == {"*"}
    assert parse_if_none_match(None) == set()
    assert parse_if_none_match("") == set()


async def test_etag_and_304(client: httpx.AsyncClient, clusters: Clusters) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    await clusters.add("st-1", {"env": "staging"})
    policy = await create(
        client,
        policy_body(
            overrides=[
                {
                    "cluster_name": "eu-1",
                    "patches": [
                        {
                            "op": "replace",
                            "path": "/spec/kprobes/0/selectors/0/matchActions/0/action",
                            "value": "Post",
                        }
                    ],
                }
            ]
        ),
    )

    eu = placed(await pull(client, "eu-1"))
    assert eu.cluster == "eu-1"
    assert [(p.policy_id, p.name, p.generation) for p in eu.policies] == [(policy["id"], "no-ptrace", 1)]
    manifest = eu.policies[0].manifest
    assert manifest["metadata"]["labels"][LABEL_POLICY_ID] == policy["id"]
    assert manifest["spec"]["kprobes"][0]["selectors"][0]["matchActions"][0]["action"] == "Post"
    staging = placed(await pull(client, "st-1"))
    assert staging.policies == ()
    assert staging.etag != eu.etag

    for header in (f'"{eu.etag}"', f'W/"{eu.etag}"', f'"other", "{eu.etag}"', "*"):
        response = await client.get(PULL, headers={**spoke("eu-1"), "If-None-Match": header})
        assert response.status_code == 304, header
        assert response.headers["ETag"] == f'"{eu.etag}"'
        assert response.content == b""
    stale = await pull(client, "eu-1", etag="stale")
    assert placed(stale) == eu
    assert (await client.get(PULL)).status_code == 401  # no credential


async def test_long_poll_wakes_the_changed_spoke_only(client: httpx.AsyncClient, clusters: Clusters) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    await clusters.add("st-1", {"env": "staging"})
    policy = await create(client, policy_body())
    eu = placed(await pull(client, "eu-1"))
    staging = placed(await pull(client, "st-1"))

    eu_wait = asyncio.create_task(timed(pull(client, "eu-1", eu.etag, wait=HOLD_S)))
    staging_wait = asyncio.create_task(timed(pull(client, "st-1", staging.etag, wait=1.5)))
    await asyncio.sleep(0.3)
    assert not eu_wait.done()
    assert not staging_wait.done()
    changed = await client.put(
        f"/v1/federated-policies/{policy['id']}",
        json=policy_body(template=tracing_policy(action="Post")),
        headers=WRITE_HEADERS,
    )
    assert changed.status_code == 200
    put_done = time.monotonic()
    response, _ = await eu_wait
    assert time.monotonic() - put_done < WAKE_S
    woken = placed(response)
    assert woken.etag != eu.etag
    assert [p.generation for p in woken.policies] == [2]

    response, elapsed = await staging_wait
    assert response.status_code == 304  # never woken: its set did not change
    assert elapsed >= 1.4


async def test_delete_empties_the_set_at_once(client: httpx.AsyncClient, clusters: Clusters) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    policy = await create(client, policy_body())
    eu = placed(await pull(client, "eu-1"))
    waiting = asyncio.create_task(pull(client, "eu-1", eu.etag, wait=HOLD_S))
    await asyncio.sleep(0.2)
    assert (
        await client.delete(f"/v1/federated-policies/{policy['id']}", headers=WRITE_HEADERS)
    ).status_code == 204
    assert placed(await asyncio.wait_for(waiting, WAKE_S)).policies == ()


async def test_wait_is_bounded_by_long_poll_max(
    federation_db: str,
    redis_url: str,
    redis_prefix: str,
    clusters: Clusters,
    policy_settings: FederationSettings,
) -> None:
    from tests.federation.conftest import make_hub_settings

    settings = make_hub_settings(federation_db, redis_url, redis_prefix, long_poll_max_s=0.4)
    await clusters.add("eu-1")
    async with running(policies_app(settings)) as client:
        first = placed(await pull(client, "eu-1"))
        response, elapsed = await timed(pull(client, "eu-1", first.etag, wait=HOLD_S))
        assert response.status_code == 304
        assert 0.35 <= elapsed < HOLD_S / 3  # held for long_poll_max_s, not for the wait asked
    # wait=0 answers at once, also where a pull may be held for long (HOLD_S here)
    async with running(policies_app(policy_settings)) as client:
        first = placed(await pull(client, "eu-1"))
        response, elapsed = await timed(pull(client, "eu-1", first.etag, wait=0))
        assert response.status_code == 304
        assert elapsed < HOLD_S / 3


async def test_another_replica_wakes_through_redis(
    policy_settings: FederationSettings, clusters: Clusters
) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    async with running(policies_app(policy_settings)) as a, running(policies_app(policy_settings)) as b:
        empty = placed(await pull(b, "eu-1"))
        waiting = asyncio.create_task(pull(b, "eu-1", empty.etag, wait=HOLD_S))
        await asyncio.sleep(0.3)  # B is holding the request
        await create(a, policy_body())
        created_at = time.monotonic()
        got = placed(await waiting)
        assert time.monotonic() - created_at < WAKE_S
        assert [p.name for p in got.policies] == ["no-ptrace"]


async def test_relabelled_cluster_gets_its_new_set(
    policy_settings: FederationSettings, clusters: Clusters, redis_client: Any, redis_prefix: str
) -> None:
    await clusters.add("st-1", {"env": "staging"})
    app = policies_app(policy_settings)
    async with running(app) as client:
        await create(client, policy_body())
        staging = placed(await pull(client, "st-1"))
        assert staging.policies == ()
        waiting = asyncio.create_task(pull(client, "st-1", staging.etag, wait=HOLD_S))
        await asyncio.sleep(0.2)
        await clusters.relabel("st-1", {"env": "prod"})
        # what hub-core does after it changes labels (here with a bare Redis client and the prefix)
        await notify_placements_changed(redis_client, prefix=redis_prefix)
        got = placed(await asyncio.wait_for(waiting, WAKE_S))
        assert [p.name for p in got.policies] == ["no-ptrace"]
        # and back, announced through the app this time
        waiting = asyncio.create_task(pull(client, "st-1", got.etag, wait=HOLD_S))
        await asyncio.sleep(0.2)
        await clusters.relabel("st-1", {"env": "staging"})
        await notify_placements_changed(app)
        assert placed(await asyncio.wait_for(waiting, WAKE_S)).policies == ()


async def test_unannounced_changes_are_picked_up_by_the_recheck(
    policy_settings: FederationSettings, clusters: Clusters
) -> None:
    await clusters.add("st-1", {"env": "staging"})
    async with running(policies_app(policy_settings, recheck_s=0.3)) as client:
        await create(client, policy_body())
        staging = placed(await pull(client, "st-1"))
        waiting = asyncio.create_task(timed(pull(client, "st-1", staging.etag, wait=HOLD_S)))
        await asyncio.sleep(0.1)
        await clusters.relabel("st-1", {"env": "prod"})  # nobody tells the hub
        response, elapsed = await waiting
        assert [p.name for p in placed(response).policies] == ["no-ptrace"]
        assert elapsed < WAKE_S  # the 0.3 s re-check, not the end of the hold


async def test_a_cluster_declared_after_start_pulls_at_once(
    client: httpx.AsyncClient, clusters: Clusters
) -> None:
    """The snapshot does not know the cluster yet; the caller's labels (read with its credential) serve."""
    await create(client, policy_body())
    await clusters.add("eu-9", {"env": "prod"})
    assert [p.name for p in placed(await pull(client, "eu-9")).policies] == ["no-ptrace"]
    assert (await client.get("/v1/federated-policies", headers=READ_HEADERS)).status_code == 200


async def test_many_waiting_spokes_one_change(client: httpx.AsyncClient, clusters: Clusters) -> None:
    """Fifty spokes hold a poll; one change wakes the forty placed ones (each answer within the
    bound from before the operator's POST, far from the end of their hold); the ten others stay
    held."""
    names = [f"prod-{i}" for i in range(40)] + [f"dev-{i}" for i in range(10)]
    for name in names:
        await clusters.add(name, {"env": "prod" if name.startswith("prod") else "dev"})
    etags = {name: placed(await pull(client, name)).etag for name in names}

    async def finished(name: str) -> tuple[httpx.Response, float]:
        # the unplaced ones hold for 3 s only: they answer 304 in any case, and the test ends
        wait = HOLD_S if name.startswith("prod") else 3
        response = await pull(client, name, etags[name], wait=wait)
        return response, time.monotonic()

    tasks = {name: asyncio.create_task(finished(name)) for name in names}
    await asyncio.sleep(0.3)
    posted_at = time.monotonic()
    await create(client, policy_body())
    results = {name: await task for name, task in tasks.items()}
    prod = [results[n] for n in names if n.startswith("prod")]
    assert all(r.status_code == 200 for r, _ in prod)
    assert max(at - posted_at for _, at in prod) < WAKE_S
    assert all(results[n][0].status_code == 304 for n in names if n.startswith("dev"))
