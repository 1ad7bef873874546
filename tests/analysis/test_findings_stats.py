"""``GET /v1/findings/stats``: the aggregates match a count made in Python over the same rows
(100,000 of them, loaded by COPY), empty buckets are included, bad parameters get a 422."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.contracts.events.v1 import Severity

from tests.analysis.conftest import analysis_settings

pytestmark = [pytest.mark.db, pytest.mark.redis]

READ = "stats-read-token-0123456789abcdef"
START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
SPAN = timedelta(days=10)
SEVERITIES = [s.value for s in Severity]
RANKS = {s.value: s.rank for s in Severity}
# more categories, namespaces and images than the top lists hold, with skewed frequencies
CATEGORIES = [f"Category {i:02d}" for i in range(30)]
NAMESPACES = [f"ns-{i:02d}" for i in range(25)]
IMAGES = [f"registry.example.com/team/app-{i:02d}:1.{i}" for i in range(25)]
COLUMNS = (
    "id",
    "kind",
    "detector",
    "category",
    "severity",
    "severity_rank",
    "techniques",
    "event_time",
    "namespace",
    "cluster",
    "source",
    "evidence_event_ids",
    "envelope_id",
    "payload",
)


def skewed(rng: random.Random, values: list[str]) -> str:
    # weights 1/(i+1): a clear order at the top, near-ties further down
    return rng.choices(values, weights=[1 / (i + 1) for i in range(len(values))])[0]


def make_findings(count: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    findings = []
    for n in range(count):
        namespace = skewed(rng, NAMESPACES) if rng.random() > 0.05 else None  # cluster-scoped
        image = skewed(rng, IMAGES) if rng.random() > 0.1 else None
        event_time = START + timedelta(seconds=rng.randrange(int(SPAN.total_seconds())))
        severity = rng.choice(SEVERITIES)
        findings.append(
            {
                "id": f"finding-{n:07d}",
                "kind": "source",
                "detector": "source",
                "category": skewed(rng, CATEGORIES),
                "severity": severity,
                "techniques": ["T1059"],
                "title": "A shell was spawned in a container",
                "explanation": "The source reported it; see the evidence event for the raw alert.",
                "event_time": event_time,
                "evidence_event_ids": [f"event-{n:07d}"],
                "workload": {
                    "cluster": "prod",
                    "namespace": namespace,
                    "pod": "api-7d9f-x2",
                    "container": "api",
                    "image": image,
                },
                "source": "falco",
                "attributes": {},
            }
        )
    return findings


def records(findings: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for f in findings:
        payload = {**f, "event_time": f["event_time"].isoformat()}
        out.append(
            (
                f["id"],
                f["kind"],
                f["detector"],
                f["category"],
                f["severity"],
                RANKS[f["severity"]],
                f["techniques"],
                f["event_time"],
                f["workload"]["namespace"],
                f["workload"]["cluster"],
                f["source"],
                f["evidence_event_ids"],
                f"envelope-{f['id']}",
                json.dumps(payload),
            )
        )
    return out


def top(counter: Counter[str], n: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def expected_stats(
    findings: list[dict[str, Any]], since: datetime, until: datetime, step: timedelta
) -> dict[str, Any]:
    chosen = [f for f in findings if since <= f["event_time"] < until]
    first = since.replace(minute=0, second=0, microsecond=0)
    if step == timedelta(days=1):
        first = first.replace(hour=0)
    series: dict[datetime, Counter[str]] = {}
    categories: dict[datetime, Counter[str]] = {}
    start = first
    while start < until:
        series[start] = Counter()
        categories[start] = Counter()
        start += step
    shown = {c for c, _ in top(Counter(f["category"] for f in chosen), 5)}
    for f in chosen:
        bucket = first + step * ((f["event_time"] - first) // step)
        series[bucket][f["severity"]] += 1
        categories[bucket][f["category"] if f["category"] in shown else "other"] += 1
    return {
        "total": len(chosen),
        "by_severity": {s: sum(1 for f in chosen if f["severity"] == s) for s in SEVERITIES},
        "by_category": top(Counter(f["category"] for f in chosen), 20),
        "top_namespaces": top(
            Counter(f["workload"]["namespace"] for f in chosen if f["workload"]["namespace"]), 10
        ),
        "top_images": top(Counter(f["workload"]["image"] for f in chosen if f["workload"]["image"]), 10),
        "series": [(start, {s: counts[s] for s in SEVERITIES}) for start, counts in series.items()],
        "categories": [dict(c) for c in categories.values()],
    }


async def load(database_url: str, findings: list[dict[str, Any]]) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.copy_records_to_table(
            "analysis_findings", records=records(findings), columns=COLUMNS
        )
        await connection.execute("ANALYZE analysis_findings")
    finally:
        await connection.close()


@pytest.fixture
async def client(db: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    auth = ApiAuthSettings(token=SecretStr(READ + "-write"), token_read=SecretStr(READ))
    app = create_app(analysis_settings(database_url=db, redis_url=redis_url), auth=auth)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analysis", headers={"Authorization": f"Bearer {READ}"}
        ) as c:
            yield c


def check(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert body["total"] == expected["total"]
    assert body["by_severity"] == expected["by_severity"]
    assert [(c["category"], c["count"]) for c in body["by_category"]] == expected["by_category"]
    assert [(n["namespace"], n["count"]) for n in body["top_namespaces"]] == expected["top_namespaces"]
    assert [(i["image"], i["count"]) for i in body["top_images"]] == expected["top_images"]
    got_series = [
        (datetime.fromisoformat(b["start"].replace("Z", "+00:00")), b["counts"]) for b in body["series"]
    ]
    assert got_series == expected["series"]
    assert [b["categories"] for b in body["series"]] == expected["categories"]


@pytest.mark.slow
async def test_stats_over_100k_findings_match_python_counts(db: str, client: httpx.AsyncClient) -> None:
    findings = make_findings(100_000)
    await load(db, findings)

    # the whole range by day, and a range cut mid-hour by hour (the first bucket starts before since)
    for since, until, bucket, step in (
        (START, START + SPAN, "day", timedelta(days=1)),
        (
            START + timedelta(days=2, minutes=37),
            START + timedelta(days=5, hours=3),
            "hour",
            timedelta(hours=1),
        ),
    ):
        params = {"since": since.isoformat(), "until": until.isoformat(), "bucket": bucket}
        await client.get("/v1/findings/stats", params=params)  # warm the connection and plan caches
        began = time.perf_counter()
        response = await client.get("/v1/findings/stats", params=params)
        elapsed_ms = (time.perf_counter() - began) * 1000
        assert response.status_code == 200, response.text
        body = response.json()
        print(f"findings/stats bucket={bucket} over {body['total']} of 100,000 findings: {elapsed_ms:.1f} ms")
        expected = expected_stats(findings, since, until, step)
        assert expected["total"] > 10_000  # the ranges hold enough findings to rank
        check(body, expected)
        assert len(body["by_category"]) == 20
        assert len(body["top_namespaces"]) == len(body["top_images"]) == 10


async def test_empty_buckets_are_included(db: str, client: httpx.AsyncClient) -> None:
    findings = make_findings(3)
    for f, hours in zip(findings, (0, 0, 5), strict=True):
        f["event_time"] = START + timedelta(hours=hours, minutes=10)
    await load(db, findings)
    response = await client.get(
        "/v1/findings/stats",
        params={"since": START.isoformat(), "until": (START + timedelta(hours=8)).isoformat()},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [sum(b["counts"].values()) for b in body["series"]] == [2, 0, 0, 0, 0, 1, 0, 0]
    assert set(body["series"][1]["counts"]) == set(SEVERITIES)
    check(body, expected_stats(findings, START, START + timedelta(hours=8), timedelta(hours=1)))

    nothing = await client.get(
        "/v1/findings/stats",
        params={"since": "2020-01-01T00:00:00Z", "until": "2020-01-03T00:00:00Z", "bucket": "day"},
    )
    assert nothing.status_code == 200
    assert nothing.json()["total"] == 0
    assert len(nothing.json()["series"]) == 2
    assert nothing.json()["by_category"] == []


async def test_default_window_ends_now(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/findings/stats", params={"bucket": "day"})
    assert response.status_code == 200, response.text
    body = response.json()
    until = datetime.fromisoformat(body["until"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - until).total_seconds()) < 60
    assert len(body["series"]) in (30, 31)  # 30 days, the first one truncated to midnight


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "invalid_time_range"),
        ({"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "invalid_time_range"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}, "too_many_buckets"),
        (
            {"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z", "bucket": "day"},
            "too_many_buckets",
        ),
        ({"since": "0001-01-01T00:00:00+14:00"}, "invalid_time_range"),
        ({"until": "0001-01-01T05:00:00+00:00"}, "invalid_time_range"),
        ({"since": "9999-12-31T23:30:00Z", "until": "9999-12-31T23:59:59-10:00"}, "invalid_time_range"),
    ],
)
async def test_bad_ranges_are_422(client: httpx.AsyncClient, params: dict[str, str], reason: str) -> None:
    response = await client.get("/v1/findings/stats", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == reason


@pytest.mark.parametrize(
    "params",
    [
        {"bucket": "week"},
        {"since": "yesterday"},
        {"since": "2026-03-01T00:00:00"},
        {"until": "2026-13-01T00:00Z"},
    ],
)
async def test_malformed_parameters_are_422(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/v1/findings/stats", params=params)
    assert response.status_code == 422, response.text


async def test_exactly_500_buckets_is_allowed(client: httpx.AsyncClient) -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    ok = await client.get(
        "/v1/findings/stats",
        params={"since": since.isoformat(), "until": (since + timedelta(hours=500)).isoformat()},
    )
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["series"]) == 500
    over = await client.get(
        "/v1/findings/stats",
        params={"since": since.isoformat(), "until": (since + timedelta(hours=500, seconds=1)).isoformat()},
    )
    assert over.status_code == 422


async def test_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/findings/stats", headers={"Authorization": ""})
    assert response.status_code == 401
