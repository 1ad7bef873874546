"""``GET /v1/admission/decisions/stats``: denials by enforcing check, namespace and image, from
reviews answered by the webhook and from a large generated log checked against Python counts."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_admission.app import create_app
from qcdr_common.api.auth import ApiAuthSettings

from tests.admission.webhook.conftest import (
    READ,
    WRITE,
    admission_settings,
    baseline_pod,
    privileged_pod,
    restricted_pod,
    review,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]

T0 = datetime(2026, 4, 1, tzinfo=UTC)
COLUMNS = (
    "time",
    "uid",
    "event_id",
    "operation",
    "kind",
    "namespace",
    "name",
    "username",
    "allowed",
    "evaluated",
    "skipped",
    "checks",
    "violations",
    "images",
)


@dataclass
class Api:
    client: httpx.AsyncClient

    async def validate(self, rv: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post("/validate", content=orjson.dumps(rv))
        assert r.status_code == 200, r.text
        return dict(r.json()["response"])

    async def stats(self, **params: Any) -> httpx.Response:
        return await self.client.get(
            "/v1/admission/decisions/stats", params=params, headers={"Authorization": f"Bearer {READ}"}
        )


@pytest.fixture
async def api(committed_db: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Api]:
    settings = admission_settings(
        database_url=committed_db,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        decisions_enabled=True,
        decisions_flush_s=0.05,
        cluster_id="test-cluster",
    )
    app = create_app(settings, auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://admission") as client:
            yield Api(client)


def pairs(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(i["key"], i["count"]) for i in items]


async def test_stats_of_reviews_the_webhook_answered(api: Api) -> None:
    await api.validate(review(privileged_pod("bad-1"), namespace="shop"))
    await api.validate(review(privileged_pod("bad-2"), namespace="shop"))
    await api.validate(review(privileged_pod("bad-3"), namespace="dev"))
    await api.validate(review(restricted_pod("good"), namespace="shop"))
    # allowed, with restricted's warn-mode results: not a denial, and its checks are not counted
    warned = await api.validate(review(baseline_pod("warned"), namespace="shop"))
    assert warned["allowed"] is True

    for _ in range(200):
        body = (await api.stats()).json()
        if body["total"] >= 5:
            break
        await asyncio.sleep(0.02)
    assert body["total"] == 5
    assert body["denied"] == 3
    checks = dict(pairs(body["by_check"]))
    assert checks["pss/privileged"] == 3
    assert checks["pss/hostNamespaces"] == 3
    assert "pss/runAsNonRoot" not in checks  # restricted is warn-only by default
    assert all(c == 3 for c in checks.values())  # every key is from the three denials, once each
    assert pairs(body["by_namespace"]) == [("shop", 2), ("dev", 1)]
    assert pairs(body["by_image"]) == [("nginx:1.27", 3)]

    future = datetime.now(UTC) + timedelta(minutes=1)
    later = (
        await api.stats(since=future.isoformat(), until=(future + timedelta(hours=1)).isoformat())
    ).json()
    assert (later["total"], later["denied"], later["by_check"]) == (0, 0, [])


def generated_log(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    namespaces = [f"ns-{i:02d}" for i in range(30)]
    images = [f"registry.example.com/app-{i:02d}:1.0" for i in range(30)]
    checks = [("pss", f"check{i:02d}") for i in range(20)] + [
        ("policy:corp", f"rule{i:02d}") for i in range(10)
    ]
    weights = [1 / (i + 1) for i in range(30)]
    rows = []
    for n in range(count):
        allowed = rng.random() < 0.6
        violations = [
            {
                "source": s,
                "check": c,
                "message": "x",
                "mode": rng.choice(["enforce", "enforce", "warn", "audit"]),
            }
            for s, c in rng.choices(checks, weights=weights, k=rng.randint(0, 4))
        ]
        if not allowed and not any(v["mode"] == "enforce" for v in violations):
            violations.append({"source": "pss", "check": "check00", "message": "x", "mode": "enforce"})
        if allowed:
            violations = [v for v in violations if v["mode"] != "enforce"]
        rows.append(
            {
                "time": T0 + timedelta(seconds=rng.randrange(10 * 86_400)),
                "namespace": rng.choices(namespaces, weights=weights)[0] if rng.random() > 0.05 else None,
                "allowed": allowed,
                "violations": violations,
                "images": sorted(set(rng.choices(images, weights=weights, k=rng.randint(0, 3)))),
                "n": n,
            }
        )
    return rows


async def insert(database_url: str, rows: list[dict[str, Any]]) -> None:
    records = [
        (
            r["time"],
            str(uuid.uuid4()),
            f"event-{r['n']}",
            "CREATE",
            "Pod",
            r["namespace"],
            f"pod-{r['n']}",
            "alice",
            r["allowed"],
            True,
            None,
            sorted({v["check"] for v in r["violations"]}),
            json.dumps(r["violations"]),
            r["images"],
        )
        for r in rows
    ]
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.copy_records_to_table("admission_decisions", records=records, columns=COLUMNS)
    finally:
        await connection.close()


def top(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:20]


async def test_stats_match_python_counts(api: Api, committed_db: str) -> None:
    rows = generated_log(20_000)
    await insert(committed_db, rows)
    since, until = T0 + timedelta(days=2, hours=5), T0 + timedelta(days=7, minutes=13)
    chosen = [r for r in rows if since <= r["time"] < until]
    denied = [r for r in chosen if not r["allowed"]]

    response = await api.stats(since=since.isoformat(), until=until.isoformat())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(chosen)
    assert body["denied"] == len(denied)
    assert len(denied) > 1000
    by_check = Counter(
        key
        for r in denied
        for key in {f"{v['source']}/{v['check']}" for v in r["violations"] if v["mode"] == "enforce"}
    )
    assert pairs(body["by_check"]) == top(by_check)
    assert len(body["by_check"]) == 20  # 30 keys in the log: the top 20
    assert pairs(body["by_namespace"]) == top(Counter(r["namespace"] for r in denied if r["namespace"]))
    assert pairs(body["by_image"]) == top(Counter(i for r in denied for i in r["images"]))

    everything = (await api.stats()).json()
    assert everything["total"] == len(rows)
    assert everything["denied"] == sum(1 for r in rows if not r["allowed"])


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-04-02T00:00:00Z", "until": "2026-04-01T00:00:00Z"},
        {"since": "2026-04-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"},
        {"since": "2026-04-01T00:00:00"},  # no time zone
        {"until": "soon"},
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-10:00"},
    ],
)
async def test_bad_parameters_are_422(api: Api, params: dict[str, str]) -> None:
    response = await api.stats(**params)
    assert response.status_code == 422, response.text


async def test_stats_need_the_read_scope(api: Api) -> None:
    assert (await api.client.get("/v1/admission/decisions/stats")).status_code == 401
