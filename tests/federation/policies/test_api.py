"""The operator API of federated policies: create, list (cursor pages), get, put (a new generation
only when the spec changed), delete (soft), versions; bad input is a 422 or 409 with reasons and
stores nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from qcdr_common.contracts.federation.v1 import FederatedPolicySpec

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS
from tests.federation.policies.conftest import Clusters, policy_body, tracing_policy

pytestmark = [pytest.mark.db, pytest.mark.redis]

BASE = "/v1/federated-policies"


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(BASE, json=body, headers=WRITE_HEADERS)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def count(database_url: str, table: str) -> int:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        value: int = await connection.fetchval(f"SELECT count(*) FROM {table}")
        return value
    finally:
        await connection.close()


async def test_create_get_list(client: httpx.AsyncClient) -> None:
    created = await create(client, policy_body("no-ptrace", enforce=True, description="why"))
    assert created["id"].startswith("fp-")
    assert (created["name"], created["kind"], created["api_version"]) == (
        "no-ptrace",
        "TracingPolicy",
        "cilium.io/v1alpha1",
    )
    assert (created["generation"], created["source"], created["created_by"]) == (1, "api", "qcdr-api-token")
    assert created["enforce"] is True
    assert created["description"] == "why"
    assert len(created["content_hash"]) == 64

    got = await client.get(f"{BASE}/{created['id']}", headers=READ_HEADERS)
    assert got.status_code == 200
    assert got.json() == created

    for name in ("b-policy", "a-policy", "c-policy"):
        await create(client, policy_body(name))
    page = await client.get(BASE, params={"limit": 2}, headers=READ_HEADERS)
    assert page.status_code == 200
    assert [p["name"] for p in page.json()["items"]] == ["a-policy", "b-policy"]
    rest = await client.get(
        BASE, params={"limit": 2, "cursor": page.json()["next_cursor"]}, headers=READ_HEADERS
    )
    assert [p["name"] for p in rest.json()["items"]] == ["c-policy", "no-ptrace"]
    assert rest.json()["next_cursor"] is None


async def test_put_same_spec_is_a_no_op_and_a_change_is_a_generation(
    client: httpx.AsyncClient, federation_db: str
) -> None:
    created = await create(client, policy_body())
    url = f"{BASE}/{created['id']}"
    same = await client.put(url, json=policy_body(), headers=WRITE_HEADERS)
    assert same.status_code == 200
    assert (same.json()["generation"], same.json()["content_hash"]) == (1, created["content_hash"])
    assert same.json()["updated_at"] == created["updated_at"]

    changed_body = policy_body(template=tracing_policy(action="Post"))
    changed = await client.put(url, json=changed_body, headers=WRITE_HEADERS)
    assert changed.status_code == 200
    assert changed.json()["generation"] == 2
    assert changed.json()["content_hash"] != created["content_hash"]
    # once more with the same change: still 2
    again = await client.put(url, json=changed_body, headers=WRITE_HEADERS)
    assert again.json()["generation"] == 2
    assert await count(federation_db, "federation_policy_versions") == 2

    versions = await client.get(f"{url}/versions", headers=READ_HEADERS)
    assert versions.status_code == 200
    items = versions.json()["items"]
    assert [(v["generation"], v["content_hash"]) for v in items] == [
        (2, changed.json()["content_hash"]),
        (1, created["content_hash"]),
    ]
    first_spec = FederatedPolicySpec.model_validate(items[1]["spec"])
    assert first_spec.template == tracing_policy()
    paged = await client.get(f"{url}/versions", params={"limit": 1}, headers=READ_HEADERS)
    assert [v["generation"] for v in paged.json()["items"]] == [2]
    tail = await client.get(
        f"{url}/versions", params={"limit": 1, "cursor": paged.json()["next_cursor"]}, headers=READ_HEADERS
    )
    assert [v["generation"] for v in tail.json()["items"]] == [1]


async def test_delete_is_soft_and_frees_the_name(client: httpx.AsyncClient, federation_db: str) -> None:
    created = await create(client, policy_body())
    url = f"{BASE}/{created['id']}"
    assert (await client.delete(url, headers=WRITE_HEADERS)).status_code == 204
    assert (await client.get(url, headers=READ_HEADERS)).status_code == 404
    gone = await client.delete(url, headers=WRITE_HEADERS)
    assert (gone.status_code, gone.json()["reason"]) == (404, "policy_not_found")
    assert (await client.get(BASE, headers=READ_HEADERS)).json()["items"] == []
    assert await count(federation_db, "federation_policies") == 1  # kept, for audit
    again = await create(client, policy_body())
    assert again["id"] != created["id"]
    assert again["generation"] == 1


async def test_scopes(client: httpx.AsyncClient) -> None:
    assert (await client.post(BASE, json=policy_body(), headers=READ_HEADERS)).status_code == 403
    assert (await client.get(BASE)).status_code == 401
    assert (await client.get(BASE, headers=READ_HEADERS)).status_code == 200


def _bad(change: Any) -> dict[str, Any]:
    body = policy_body()
    change(body)
    return body


def _namespaced_without_namespace(body: dict[str, Any]) -> None:
    body["template"]["kind"] = "TracingPolicyNamespaced"


def _selector_operator(body: dict[str, Any]) -> None:
    body["placement"] = {
        "cluster_selector": {"match_expressions": [{"key": "env", "operator": "Like", "values": ["x"]}]}
    }


def _exists_with_values(body: dict[str, Any]) -> None:
    body["placement"] = {
        "cluster_selector": {"match_expressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}
    }


def _bad_patch(body: dict[str, Any]) -> None:
    body["overrides"] = [
        {"cluster_name": "eu-1", "patches": [{"op": "replace", "path": "/spec/nope/0", "value": 1}]}
    ]


@pytest.mark.parametrize(
    ("body", "reason", "loc", "fragment"),
    [
        (
            _bad(lambda b: b["template"].update(kind="Deployment")),
            "invalid_policy",
            ["body", "template", "kind"],
            "unknown kind",
        ),
        (
            _bad(_namespaced_without_namespace),
            "invalid_policy",
            ["body", "template", "metadata", "namespace"],
            "namespaced",
        ),
        (_bad(_bad_patch), "invalid_policy", ["body", "overrides", 0, "patches"], "cluster 'eu-1'"),
        (_bad(_selector_operator), "validation_error", ["body", "placement", "cluster_selector"], "In"),
        (
            _bad(_exists_with_values),
            "invalid_policy",
            ["body", "placement", "cluster_selector", "match_expressions", 0, "values"],
            "takes no values",
        ),
        (_bad(lambda b: b.update(name="Not A Name")), "validation_error", ["body", "name"], "pattern"),
        (
            # once accepted: "$" in a re.match pattern also matches before a final newline, and
            # every spoke's API server then refused the rendered object
            _bad(lambda b: b["template"]["metadata"].update(name="block-ptrace\n")),
            "invalid_policy",
            ["body", "template", "metadata", "name"],
            "DNS-1123 subdomain",
        ),
        (_bad(lambda b: b.update(surprise=1)), "validation_error", ["body", "surprise"], "Extra inputs"),
        # valid JSON, but PostgreSQL's jsonb refuses a NUL: once a 500 instead of a named field
        (_bad(lambda b: b.update(description="a\x00b")), "invalid_policy", ["body", "description"], "NUL"),
        (
            _bad(lambda b: b["template"]["spec"].update(extra="a\x00b")),
            "invalid_policy",
            ["body", "template", "spec", "extra"],
            "NUL",
        ),
        (
            _bad(lambda b: b["template"]["spec"].update({"ex\x00tra": 1})),
            "invalid_policy",
            ["body", "template", "spec"],
            "NUL",
        ),
    ],
)
async def test_bad_input_is_refused_with_reasons_and_nothing_stored(
    client: httpx.AsyncClient,
    clusters: Clusters,
    federation_db: str,
    body: dict[str, Any],
    reason: str,
    loc: list[Any],
    fragment: str,
) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    response = await client.post(BASE, json=body, headers=WRITE_HEADERS)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["reason"] == reason
    matching = [e for e in problem["errors"] if e["loc"][: len(loc)] == loc]
    assert matching, problem
    assert any(fragment in e["msg"] for e in matching), problem
    assert await count(federation_db, "federation_policies") == 0
    assert await count(federation_db, "federation_policy_versions") == 0


async def test_bad_put_changes_nothing(
    client: httpx.AsyncClient, clusters: Clusters, federation_db: str
) -> None:
    await clusters.add("eu-1", {"env": "prod"})
    created = await create(client, policy_body())
    url = f"{BASE}/{created['id']}"
    bad = policy_body()
    _bad_patch(bad)
    assert (await client.put(url, json=bad, headers=WRITE_HEADERS)).status_code == 422
    renamed = await client.put(url, json=policy_body("other-name"), headers=WRITE_HEADERS)
    assert (renamed.status_code, renamed.json()["reason"]) == (422, "name_mismatch")
    assert (await client.get(url, headers=READ_HEADERS)).json() == created
    assert await count(federation_db, "federation_policy_versions") == 1
    missing = await client.put(
        f"{BASE}/fp-00000000-0000-7000-8000-000000000000", json=policy_body(), headers=WRITE_HEADERS
    )
    assert (missing.status_code, missing.json()["reason"]) == (404, "policy_not_found")


async def test_a_patch_for_a_cluster_not_declared_yet_is_accepted(client: httpx.AsyncClient) -> None:
    body = policy_body()
    _bad_patch(body)
    assert (await client.post(BASE, json=body, headers=WRITE_HEADERS)).status_code == 201


async def test_duplicate_name_is_409(client: httpx.AsyncClient, federation_db: str) -> None:
    await create(client, policy_body())
    duplicate = await client.post(
        BASE, json=policy_body(template=tracing_policy(action="Post")), headers=WRITE_HEADERS
    )
    assert (duplicate.status_code, duplicate.json()["reason"]) == (409, "policy_exists")
    assert await count(federation_db, "federation_policies") == 1
    assert await count(federation_db, "federation_policy_versions") == 1


async def test_unknown_ids(client: httpx.AsyncClient) -> None:
    for path in ("", "/versions", "/status"):
        response = await client.get(
            f"{BASE}/fp-00000000-0000-7000-8000-000000000000{path}", headers=READ_HEADERS
        )
        assert (response.status_code, response.json()["reason"]) == (404, "policy_not_found")
    malformed = await client.get(f"{BASE}/not-an-id", headers=READ_HEADERS)
    assert malformed.status_code == 422
