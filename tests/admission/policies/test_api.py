"""``/v1/admission/policies``: CRUD, validation, auth, and reload across two app instances."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from qcdr_admission.engine import Mode
from qcdr_admission.policies.model import AdmissionPolicy
from qcdr_admission.policies.reload import PolicyStore
from qcdr_common.db import make_engine
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.admission.policies.conftest import READ, WRITE, make_app
from tests.admission.policies.factories import container, pod_subject

pytestmark = [pytest.mark.db]

W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}
DEAD_URL = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
LATEST = pod_subject({"containers": [container(image="r.io/app:latest")]})


def policy(name: str = "no-latest", **fields: Any) -> dict[str, Any]:
    return {"name": name, "mode": "enforce", "checks": {"disallow_latest": True}} | fields


class Replica:
    def __init__(self, client: httpx.AsyncClient, store: PolicyStore) -> None:
        self.client = client
        self.store = store

    def checks(self) -> set[str]:
        return {r.check for r in self.store.evaluate(LATEST) if r.source.startswith("policy:")}


@pytest.fixture
async def replicas(committed_db: str, redis_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    apps = [make_app(committed_db, redis_url), make_app(committed_db, redis_url)]
    async with LifespanManager(apps[0]) as m0, LifespanManager(apps[1]) as m1:
        out = []
        for app, manager in zip(apps, (m0, m1), strict=True):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://adm")
            out.append(Replica(client, app.state.policy_store))
        try:
            yield out[0], out[1]
        finally:
            for r in out:
                await r.client.aclose()


async def wait_for(condition: Any, timeout_s: float = 30.0) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_crud_and_reload_on_every_replica(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    await wait_for(lambda: a.store.loaded and b.store.loaded)
    assert a.checks() == b.checks() == set()

    created = await a.client.post("/v1/admission/policies", json=policy(), headers=W)
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["updated_by"]) == (1, "qcdr-api-token")
    assert a.checks() == {"disallowLatestTag"}  # the writer reloads at once
    # the other replica's poller (every 0.05 s here) picks it up: in seconds, not at some later
    # re-read (the bound leaves room for a busy machine)
    assert await wait_for(lambda: b.checks() == {"disallowLatestTag"}) < 10

    again = await a.client.post("/v1/admission/policies", json=policy(), headers=W)
    assert (again.status_code, again.json()["reason"]) == (409, "policy_exists")

    warn = await b.client.put("/v1/admission/policies/no-latest", json=policy(mode="warn"), headers=W)
    assert (warn.status_code, warn.json()["version"]) == (200, 2)
    await wait_for(
        lambda: {r.mode for r in a.store.evaluate(LATEST) if r.source == "policy:no-latest"} == {Mode.WARN}
    )

    listed = (await a.client.get("/v1/admission/policies", headers=R)).json()
    names = [i["policy"]["name"] for i in listed["items"]]
    assert names == ["default-security", "no-latest"]
    assert (listed["items"][0]["built_in"], listed["items"][0]["stored"]) == (True, False)
    assert listed["generation"] == 2
    one = await a.client.get("/v1/admission/policies/no-latest", headers=R)
    assert one.json()["policy"]["mode"] == "warn"

    assert (await a.client.delete("/v1/admission/policies/no-latest", headers=W)).status_code == 204
    await wait_for(lambda: b.checks() == set())
    gone = await a.client.get("/v1/admission/policies/no-latest", headers=R)
    assert (gone.status_code, gone.json()["reason"]) == (404, "policy_not_found")
    builtin = await a.client.delete("/v1/admission/policies/default-security", headers=W)
    assert (builtin.status_code, builtin.json()["reason"]) == (409, "built_in_policy")


async def test_a_built_in_can_be_turned_off(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    priv = pod_subject({"containers": [container(securityContext={"privileged": True})]})
    await wait_for(lambda: b.store.loaded)
    assert any(r.source == "policy:default-security" for r in b.store.evaluate(priv))
    body = (await a.client.get("/v1/admission/policies/default-security", headers=R)).json()["policy"]
    put = await a.client.put(
        "/v1/admission/policies/default-security", json=body | {"enabled": False}, headers=W
    )
    assert put.status_code == 201
    await wait_for(lambda: not any(r.source == "policy:default-security" for r in b.store.evaluate(priv)))


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (policy(name="Not_DNS"), "/v1/admission/policies"),
        (policy(checks={"nope": True}), "/v1/admission/policies"),
        (policy(checks={"allowed_registries": ["https://r.io"]}), "/v1/admission/policies"),
        (policy(name="other"), "/v1/admission/policies/no-latest"),
    ],
)
async def test_validation_errors_are_422(
    replicas: tuple[Replica, Replica], body: dict[str, Any], path: str
) -> None:
    a, _ = replicas
    send = a.client.post if path.endswith("policies") else a.client.put
    answer = await send(path, json=body, headers=W)
    assert answer.status_code == 422, answer.text
    assert answer.json()["reason"] == "validation_error"
    assert answer.json()["errors"]


async def test_auth_read_and_write_scopes(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    assert (await a.client.get("/v1/admission/policies")).status_code == 401
    assert (await a.client.post("/v1/admission/policies", json=policy(), headers=R)).status_code == 403
    assert (await a.client.delete("/v1/admission/policies/x", headers=R)).status_code == 403


async def test_the_last_good_set_survives_a_database_outage(committed_db: str, redis_url: str) -> None:
    app = make_app(committed_db, redis_url)
    async with LifespanManager(app) as manager:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://adm")
        store: PolicyStore = app.state.policy_store
        assert (await client.post("/v1/admission/policies", json=policy(), headers=W)).status_code == 201
        assert any(r.check == "disallowLatestTag" for r in store.evaluate(LATEST))
        # the database goes away: the poller fails, the set stays
        dead = make_engine(DEAD_URL)
        store._sessions = async_sessionmaker(dead)
        await wait_for(lambda: store.errors > 0)
        assert store.generation == 1
        broken = make_app(DEAD_URL, redis_url)
        async with LifespanManager(broken) as m2:
            bad: PolicyStore = broken.state.policy_store
            await wait_for(lambda: bad.errors > 0)
            assert not bad.loaded
            # a replica that never loaded evaluates with the built-ins only, and is not ready
            ready = await httpx.AsyncClient(
                transport=httpx.ASGITransport(app=m2.app), base_url="http://adm"
            ).get("/readyz")
            assert ready.status_code == 503
            assert "policies" in ready.json()["checks"]
        assert any(r.check == "disallowLatestTag" for r in store.evaluate(LATEST))
        await client.aclose()
        await dead.dispose()


async def test_a_stored_policy_that_no_longer_validates_is_shown_flagged_and_can_be_fixed_or_deleted(
    committed_db: str, redis_url: str
) -> None:
    """What an upgrade that dropped a check leaves in the table. The engine skips it (documented),
    but the API re-validated every row: the list and that policy's GET answered 500, so the
    operator could not see which one it was. Both show it with its stored JSON and why."""
    stale = {"name": "old-rules", "mode": "enforce", "checks": {"a_check_removed_in_v2": True}}
    conn = await asyncpg.connect(committed_db.replace("+asyncpg", ""))
    try:
        for name in ("old-rules", "older-rules"):
            await conn.execute(
                "INSERT INTO admission_policies (name, spec, enabled, version, generation, updated_by)"
                " VALUES ($1, $2::jsonb, true, 1, 1, 'ops')",
                name,
                json.dumps(stale | {"name": name}),
            )
        await conn.execute("UPDATE admission_policy_state SET generation = 1")
    finally:
        await conn.close()
    app = make_app(committed_db, redis_url)
    async with LifespanManager(app) as manager:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://adm")
        store: PolicyStore = app.state.policy_store
        assert (await client.post("/v1/admission/policies", json=policy(), headers=W)).status_code == 201
        reason = "checks: Value error, unknown check 'a_check_removed_in_v2' (known: allowed_registries,"
        assert store.skipped["old-rules"].startswith(reason)
        assert any(r.check == "disallowLatestTag" for r in store.evaluate(LATEST))  # the others apply

        listed = await client.get("/v1/admission/policies", headers=R)
        assert listed.status_code == 200, listed.text
        items = {i["policy"]["name"]: i for i in listed.json()["items"]}
        assert sorted(items) == ["default-security", "no-latest", "old-rules", "older-rules"]
        assert items["old-rules"]["policy"] == stale  # as stored, not a re-serialisation
        assert items["old-rules"]["invalid"].startswith(reason)
        assert (items["old-rules"]["stored"], items["old-rules"]["version"]) == (True, 1)
        assert items["no-latest"]["invalid"] is None
        assert items["no-latest"]["policy"] == AdmissionPolicy.model_validate(policy()).model_dump(
            mode="json"
        )
        assert items["default-security"]["invalid"] is None
        one = await client.get("/v1/admission/policies/old-rules", headers=R)
        assert one.status_code == 200, one.text
        assert (one.json()["policy"], one.json()["invalid"]) == (stale, items["old-rules"]["invalid"])

        fixed = await client.put("/v1/admission/policies/old-rules", json=policy(name="old-rules"), headers=W)
        assert (fixed.status_code, fixed.json()["version"], fixed.json()["invalid"]) == (200, 2, None)
        gone = await client.delete("/v1/admission/policies/older-rules", headers=W)
        assert gone.status_code == 204
        assert store.skipped == {}
        assert {r.source for r in store.evaluate(LATEST) if r.check == "disallowLatestTag"} == {
            "policy:no-latest",
            "policy:old-rules",
        }
        await client.aclose()
