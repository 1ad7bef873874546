"""The federated policies inside the real hub app: a spoke registered with a bootstrap token pulls
with its own credential, reports status, and the operator sees it; the paths are public for API
tokens but not for spokes without a credential."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS, register_spoke
from tests.federation.policies.conftest import policy_body

pytestmark = [pytest.mark.db, pytest.mark.redis]


async def test_spoke_pulls_and_reports_through_the_hub(hub_client: httpx.AsyncClient) -> None:
    eu = await register_spoke(hub_client, "eu-1", {"env": "prod"})
    dev = await register_spoke(hub_client, "dev-1", {"env": "dev"})
    created = await hub_client.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    pulled = await hub_client.get("/federation/v1/policies", headers=eu.headers)
    assert pulled.status_code == 200, pulled.text
    policies = pulled.json()["policies"]
    assert [p["policy_id"] for p in policies] == [pid]
    etag = pulled.headers["ETag"]
    assert (
        await hub_client.get("/federation/v1/policies", headers={**eu.headers, "If-None-Match": etag})
    ).status_code == 304
    assert (await hub_client.get("/federation/v1/policies", headers=dev.headers)).json()["policies"] == []

    # no credential, or an API token instead of one: refused by the spoke check
    assert (await hub_client.get("/federation/v1/policies")).status_code == 401
    assert (await hub_client.get("/federation/v1/policies", headers=READ_HEADERS)).status_code == 401

    status = {
        "policies": [
            {
                "policy_id": pid,
                "generation": 1,
                "content_hash": policies[0]["content_hash"],
                "state": "applied",
                "observed_at": datetime.now(UTC).isoformat(),
            }
        ]
    }
    assert (
        await hub_client.post("/federation/v1/status", json=status, headers=eu.headers)
    ).status_code == 204
    view = await hub_client.get(f"/v1/federated-policies/{pid}/status", headers=READ_HEADERS)
    assert view.status_code == 200
    assert [(c["cluster"], c["state"], c["in_sync"]) for c in view.json()["clusters"]] == [
        ("eu-1", "applied", True)
    ]
