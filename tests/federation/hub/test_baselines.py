"""Shared baselines: the newest generation per (profile, source cluster) is kept, a spoke reads
the other clusters' baselines after its cursor, never its own, one per profile key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from qcdr_common.contracts.federation.v1 import SharedBaseline

from tests.federation.conftest import READ_HEADERS, WRITE_HEADERS, RegisteredSpoke, register_spoke

pytestmark = [pytest.mark.db, pytest.mark.redis]


def key(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def baseline(n: int, generation: int, source: str = "whatever", **data: Any) -> dict[str, Any]:
    return SharedBaseline(
        profile_key=key(n),
        source_cluster=source,
        generation=generation,
        ready_at=datetime(2026, 12, 1, tzinfo=UTC),
        data={"generation": generation, **data},
    ).model_dump(mode="json")


async def upload(client: httpx.AsyncClient, spoke: RegisteredSpoke, *items: dict[str, Any]) -> int:
    response = await client.post(
        "/federation/v1/baselines", json={"baselines": list(items)}, headers=spoke.headers
    )
    assert response.status_code == 200, response.text
    stored: int = response.json()["stored"]
    return stored


async def fetch(
    client: httpx.AsyncClient, spoke: RegisteredSpoke, after: str = "", limit: int = 100
) -> dict[str, Any]:
    response = await client.get(
        "/federation/v1/baselines", params={"after": after, "limit": limit}, headers=spoke.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_upload_list_cursor_newest_wins_and_own_excluded(hub_client: httpx.AsyncClient) -> None:
    eu = await register_spoke(hub_client, "eu-1")
    us = await register_spoke(hub_client, "us-1")
    ap = await register_spoke(hub_client, "ap-1")

    assert await upload(hub_client, eu, baseline(1, 3), baseline(2, 1)) == 2
    # the same generation again changes nothing; an older one neither
    assert await upload(hub_client, eu, baseline(1, 3), baseline(2, 0)) == 0

    # us-1 sees eu-1's baselines, source forced to the uploader
    page = await fetch(hub_client, us)
    assert [(b["profile_key"], b["source_cluster"], b["generation"]) for b in page["items"]] == [
        (key(1), "eu-1", 3),
        (key(2), "eu-1", 1),
    ]
    assert page["more"] is False
    cursor = page["next"]
    # eu-1 does not get its own back
    assert (await fetch(hub_client, eu))["items"] == []

    # nothing new after the cursor: same cursor back
    again = await fetch(hub_client, us, cursor)
    assert again["items"] == []
    assert again["next"] == cursor

    # a newer generation moves to the end: seen after the cursor
    assert await upload(hub_client, eu, baseline(2, 5, learned="more")) == 1
    page = await fetch(hub_client, us, cursor)
    assert [(b["profile_key"], b["generation"]) for b in page["items"]] == [(key(2), 5)]
    assert page["items"][0]["data"] == {"generation": 5, "learned": "more"}
    assert page["items"][0]["shared_at"] is not None

    # us-1 shares profile 1 with a higher generation: ap-1 gets one baseline per profile, the newest
    assert await upload(hub_client, us, baseline(1, 7)) == 1
    page = await fetch(hub_client, ap)
    assert sorted((b["profile_key"], b["source_cluster"], b["generation"]) for b in page["items"]) == [
        (key(1), "us-1", 7),
        (key(2), "eu-1", 5),
    ]
    # us-1 itself still sees eu-1's (older) profile 1? No: it has its own newer one, but the hub
    # hands out the newest of the *other* clusters, which for us-1 is eu-1's generation 3
    page = await fetch(hub_client, us)
    assert sorted((b["profile_key"], b["source_cluster"]) for b in page["items"]) == [
        (key(1), "eu-1"),
        (key(2), "eu-1"),
    ]


async def test_paging_with_limit(hub_client: httpx.AsyncClient) -> None:
    eu = await register_spoke(hub_client, "eu-1")
    us = await register_spoke(hub_client, "us-1")
    await upload(hub_client, eu, *(baseline(n, 1) for n in range(5)))
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page = await fetch(hub_client, us, cursor, limit=2)
        seen += [b["profile_key"] for b in page["items"]]
        cursor = page["next"]
        if not page["more"]:
            break
    assert seen == [key(n) for n in range(5)]


async def test_removed_clusters_share_nothing_and_bad_input(hub_client: httpx.AsyncClient) -> None:
    eu = await register_spoke(hub_client, "eu-1")
    us = await register_spoke(hub_client, "us-1")
    await upload(hub_client, eu, baseline(1, 1))
    assert len((await fetch(hub_client, us))["items"]) == 1
    assert (await hub_client.delete("/v1/clusters/eu-1", headers=WRITE_HEADERS)).status_code == 204
    assert (await fetch(hub_client, us))["items"] == []

    bad_key = {"baselines": [{**baseline(1, 1), "profile_key": "nginx:latest"}]}
    response = await hub_client.post("/federation/v1/baselines", json=bad_key, headers=us.headers)
    assert response.status_code == 422
    response = await hub_client.post("/federation/v1/baselines", json={"baselines": []}, headers=us.headers)
    assert response.status_code == 422
    response = await hub_client.get("/federation/v1/baselines", params={"after": "abc"}, headers=us.headers)
    assert response.status_code == 422
    response = await hub_client.get("/federation/v1/baselines", params={"limit": 0}, headers=us.headers)
    assert response.status_code == 422
    assert (await hub_client.get("/federation/v1/baselines")).status_code == 401


async def test_operator_list(hub_client: httpx.AsyncClient) -> None:
    eu = await register_spoke(hub_client, "eu-1")
    us = await register_spoke(hub_client, "us-1")
    await upload(hub_client, eu, baseline(1, 1), baseline(2, 2))
    await upload(hub_client, us, baseline(1, 4))
    body = (await hub_client.get("/v1/baselines", headers=READ_HEADERS)).json()
    assert [(b["profile_key"], b["source_cluster"], b["generation"]) for b in body["items"]] == [
        (key(1), "us-1", 4),
        (key(2), "eu-1", 2),
        (key(1), "eu-1", 1),
    ]
    assert "data" not in body["items"][0]
    page = (await hub_client.get("/v1/baselines", params={"limit": 2}, headers=READ_HEADERS)).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    rest = (
        await hub_client.get(
            "/v1/baselines", params={"limit": 2, "cursor": page["next_cursor"]}, headers=READ_HEADERS
        )
    ).json()
    assert [b["generation"] for b in rest["items"]] == [1]
    assert rest["next_cursor"] is None
    only = (await hub_client.get("/v1/baselines", params={"cluster": "eu-1"}, headers=READ_HEADERS)).json()
    assert {b["source_cluster"] for b in only["items"]} == {"eu-1"}
    only = (
        await hub_client.get("/v1/baselines", params={"profile_key": key(2)}, headers=READ_HEADERS)
    ).json()
    assert [b["generation"] for b in only["items"]] == [2]
