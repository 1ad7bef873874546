"""The REST API: filters and cursor pages, YAML, versions, finding links, transitions, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from qcdr_response.app import create_app
from qcdr_response.worker import make_lifecycle
from redis.asyncio import Redis

from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]

WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


@dataclass
class Api:
    client: httpx.AsyncClient
    database_url: str

    def h(self, token: str = WRITE) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, token: str = READ, **params: object) -> httpx.Response:
        return await self.client.get(path, headers=self.h(token), params=params)  # type: ignore[arg-type]

    async def post(self, path: str, token: str = WRITE, **kwargs: object) -> httpx.Response:
        return await self.client.post(path, headers=self.h(token), **kwargs)  # type: ignore[arg-type]


async def seed(database_url: str, namespaces: dict[str, int]) -> list[str]:
    """Findings handled and committed for real: ``{namespace: count}``; returns the finding ids."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    lc = make_lifecycle(response_settings(database_url=database_url))
    ids: list[str] = []
    try:
        for namespace, n in namespaces.items():
            findings = [make_finding(namespace=namespace) for _ in range(n)]
            ids.extend(f.id for f in findings)
            async with sessions.begin() as session:
                await handle_envelopes(session, [finding_envelope(f) for f in findings], lc)
    finally:
        await engine.dispose()
    return ids


@pytest.fixture
async def api(committed_db: str, redis_url: str) -> AsyncIterator[Api]:
    settings = response_settings(database_url=committed_db, redis_url=redis_url)
    auth = ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ))
    app = create_app(settings, auth=auth)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://response") as client:
            yield Api(client, committed_db)


async def test_list_filters_and_pages(api: Api) -> None:
    await seed(api.database_url, {"payments": 2, "shop": 1, "": 1, "web": 1})
    page = await api.get("/v1/policies")
    assert page.status_code == 200, page.text
    body = page.json()
    assert [p["namespace"] for p in body["items"]] == ["web", None, "shop", "payments"]  # newest first
    assert body["next_cursor"] is None
    assert {p["status"] for p in body["items"]} == {"proposed"}

    first = (await api.get("/v1/policies", limit=3)).json()
    assert len(first["items"]) == 3
    assert first["next_cursor"]
    rest = (await api.get("/v1/policies", limit=3, cursor=first["next_cursor"])).json()
    assert [p["namespace"] for p in rest["items"]] == ["payments"]
    assert rest["next_cursor"] is None

    shop = (await api.get("/v1/policies", namespace="shop")).json()["items"]
    assert [p["name"] for p in shop] == ["cdr-block-network-scan"]
    clusterwide = (await api.get("/v1/policies", namespace="")).json()["items"]
    assert [(p["kind"], p["name"]) for p in clusterwide] == [
        ("TracingPolicy", "cdr-block-network-scan-clusterwide")
    ]
    assert len((await api.get("/v1/policies", kind="TracingPolicyNamespaced")).json()["items"]) == 3
    assert len((await api.get("/v1/policies", family="network-scan", status="proposed")).json()["items"]) == 4
    assert (await api.get("/v1/policies", status="approved")).json()["items"] == []

    bad = await api.get("/v1/policies", status="enforcing")
    assert bad.status_code == 422
    assert bad.json()["reason"] == "validation_error"
    assert (await api.get("/v1/policies", cursor="not-a-cursor")).json()["reason"] == "invalid_cursor"
    assert (await api.get("/v1/policies", family="a\x00b")).status_code == 422


async def test_policy_yaml_versions_and_finding_links(api: Api) -> None:
    [first_id, *_] = await seed(api.database_url, {"payments": 2})
    [policy] = (await api.get("/v1/policies")).json()["items"]
    later = await seed(api.database_url, {"payments": 1})

    detail = (await api.get(f"/v1/policies/{policy['id']}")).json()
    assert detail["current_version"] == 2
    assert [(v["version"], v["finding_count"]) for v in detail["versions"]] == [(1, 2), (2, 3)]

    text = await api.get(f"/v1/policies/{policy['id']}/yaml")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/yaml")
    doc = yaml.safe_load(text.text)
    assert doc["kind"] == "TracingPolicyNamespaced"
    assert doc["metadata"]["annotations"]["qcdr.io/finding-count"] == "3"

    v1 = (await api.get(f"/v1/policies/{policy['id']}/versions/1")).json()
    assert v1["body"]["metadata"]["name"] == "cdr-block-network-scan"
    assert yaml.safe_load(v1["yaml"]) == v1["body"]
    missing = await api.get(f"/v1/policies/{policy['id']}/versions/9")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "version_not_found"
    assert (await api.get("/v1/policies/999999")).json()["reason"] == "policy_not_found"

    link = (await api.get(f"/v1/findings/{first_id}/policy")).json()
    assert (link["outcome"], link["version"], link["policy"]["id"]) == ("linked", 1, policy["id"])
    newer = (await api.get(f"/v1/findings/{later[0]}/policy")).json()
    assert newer["version"] == 2
    assert newer["content_hash"] == detail["versions"][1]["content_hash"]
    gone = await api.get("/v1/findings/nope/policy")
    assert gone.status_code == 404
    assert gone.json()["reason"] == "finding_not_linked"
    assert (await api.get("/v1/findings/a%00b/policy")).status_code == 404


async def test_transitions_through_the_api(api: Api) -> None:
    await seed(api.database_url, {"payments": 1})
    [policy] = (await api.get("/v1/policies")).json()["items"]
    pid = policy["id"]

    early = await api.post(f"/v1/policies/{pid}/apply")
    assert early.status_code == 409
    assert early.json()["reason"] == "illegal_transition"
    assert "a proposed policy cannot become applied" in early.json()["detail"]

    approved = await api.post(f"/v1/policies/{pid}/approve", json={"note": "ticket SEC-42"})
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["status_reason"] == "approved by qcdr-api-token: ticket SEC-42"
    assert (await api.post(f"/v1/policies/{pid}/approve")).json()["status"] == "approved"  # retry: same

    no_cluster = await api.post(f"/v1/policies/{pid}/apply")
    assert no_cluster.status_code == 409
    assert no_cluster.json()["reason"] == "no_cluster"

    revoked = await api.post(f"/v1/policies/{pid}/revoke")
    assert revoked.json()["status"] == "revoked"
    again = await api.post(f"/v1/policies/{pid}/approve")
    assert again.status_code == 409
    assert "revoked" in again.json()["detail"]
    assert (await api.post("/v1/policies/424242/approve")).status_code == 404


async def test_every_route_needs_a_token_and_writes_need_write(api: Api) -> None:
    await seed(api.database_url, {"payments": 1})
    [policy] = (await api.get("/v1/policies")).json()["items"]
    pid = policy["id"]
    reads = [
        "/v1/policies",
        f"/v1/policies/{pid}",
        f"/v1/policies/{pid}/yaml",
        f"/v1/policies/{pid}/versions/1",
        "/v1/findings/x/policy",
        "/v1/dns/resolve-deny",
    ]
    writes = [f"/v1/policies/{pid}/{action}" for action in ("approve", "apply", "revoke")]
    for path in reads:
        response = await api.client.get(path)
        assert response.status_code == 401, path
        assert response.json()["reason"] == "missing_token"
    for path in writes:
        assert (await api.client.post(path)).status_code == 401, path
        forbidden = await api.post(path, token=READ)
        assert forbidden.status_code == 403, path
        assert forbidden.json()["reason"] == "insufficient_scope", path
    wrong = await api.client.get("/v1/policies", headers={"Authorization": "Bearer " + "z" * 32})
    assert wrong.status_code == 401
    assert wrong.json()["reason"] == "unknown_token"


async def test_openapi_documents_the_routes_and_their_scopes(api: Api) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {
        "/v1/policies",
        "/v1/policies/{policy_id}",
        "/v1/policies/{policy_id}/yaml",
        "/v1/policies/{policy_id}/versions/{number}",
        "/v1/policies/{policy_id}/approve",
        "/v1/policies/{policy_id}/apply",
        "/v1/policies/{policy_id}/revoke",
        "/v1/findings/{finding_id}/policy",
    } <= set(paths)
    assert paths["/v1/policies/{policy_id}/approve"]["post"]["security"] == [{"bearerAuth": ["write"]}]
    assert paths["/v1/policies"]["get"]["security"] == [{"bearerAuth": ["read"]}]
    assert "text/yaml" in paths["/v1/policies/{policy_id}/yaml"]["get"]["responses"]["200"]["content"]


async def test_serve_runs_the_consumer_beside_the_api(
    committed_db: str, redis_url: str, redis_prefix: str, redis_client: Redis
) -> None:
    settings = response_settings(
        database_url=committed_db, redis_url=redis_url, redis_prefix=redis_prefix, consume_in_app=True
    )
    app = create_app(settings, auth=ApiAuthSettings(token=SecretStr(WRITE)))
    finding = make_finding()
    await publish(
        redis_client, stream_key(redis_prefix, "analysis:findings"), [finding_envelope(finding)], maxlen=1000
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://response") as client:
            headers = {"Authorization": f"Bearer {WRITE}"}
            for _ in range(200):
                link = await client.get(f"/v1/findings/{finding.id}/policy", headers=headers)
                if link.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert link.status_code == 200, link.text
            assert link.json()["policy"]["status"] == "proposed"
            ready = await client.get("/readyz")
            assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
