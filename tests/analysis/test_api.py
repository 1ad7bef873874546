"""``/v1/findings``: filters, cursor pages, one finding, errors, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_analysis.findings.handlers import EventsHandler
from qcdr_analysis.findings.service import DetectorSet
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import Delivery

from tests.analysis.conftest import T0, analysis_settings, event_envelope, make_event, tetragon_event

pytestmark = [pytest.mark.db, pytest.mark.redis]

WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
WRITE_ONLY = "write-only-token-0123456789abcdef"

NSENTER = {
    "process_exec": {
        "process": {
            "binary": "/usr/bin/nsenter",
            "arguments": "-t 1 -m -u -n -i -p bash",
            "pod": {"namespace": "default", "name": "privileged-pod"},
        }
    }
}


@dataclass
class Api:
    client: httpx.AsyncClient

    async def get(self, path: str, token: str | None = READ, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.get(path, headers=headers, params=params)

    async def all_pages(self, limit: int, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100):
            page = await self.get(
                "/v1/findings", limit=limit, **params, **({"cursor": cursor} if cursor else {})
            )
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["items"]) <= limit
            items.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("pagination did not end")


async def seed(database_url: str) -> None:
    """20 findings over 20 minutes: source findings in three namespaces and two clusters, with
    every severity, and attack-technique findings from Tetragon."""
    events = []
    severities = ["info", "low", "medium", "high", "critical"]
    for i in range(16):
        events.append(
            make_event(
                source="qualys" if i % 2 else "falco",
                category="Crypto_Mining" if i % 4 == 0 else "Terminal shell in container",
                severity=severities[i % 5],
                techniques=["T1496"] if i % 4 == 0 else ["T1059.004"],
                namespace=["payments", "shop", "web"][i % 3],
                cluster="prod" if i < 10 else "staging",
                event_time=T0 + timedelta(minutes=i),
            )
        )
    events += [tetragon_event(NSENTER, event_time=T0 + timedelta(minutes=16 + i)) for i in range(4)]
    engine = make_engine(database_url)
    try:
        handler = EventsHandler(make_session_factory(engine), DetectorSet.configure(), cluster_id="test")
        await handler([Delivery(f"{i}-0", event_envelope(e), 1) for i, e in enumerate(events)])
    finally:
        await engine.dispose()


@pytest.fixture
async def api(db: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    await seed(db)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - name: writer\n    token: {WRITE_ONLY}\n    scopes: [write]\n")
    auth = ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ), tokens_file=tokens)
    app = create_app(analysis_settings(database_url=db, redis_url=redis_url), auth=auth)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://analysis") as client:
            yield Api(client)


async def test_newest_first_and_cursor_pages_cover_everything_once(api: Api) -> None:
    everything = await api.all_pages(limit=1000)
    assert len(everything) == 20
    times = [item["event_time"] for item in everything]
    assert times == sorted(times, reverse=True)
    assert everything[0]["kind"] == "attack_technique"
    assert everything[0]["created_at"]
    for limit in (1, 3, 7, 20):
        assert await api.all_pages(limit=limit) == everything


async def test_filters(api: Api) -> None:
    async def ids(**params: Any) -> list[str]:
        return [item["id"] for item in await api.all_pages(limit=4, **params)]

    everything = {item["id"]: item for item in await api.all_pages(limit=1000)}

    def where(predicate: Any) -> list[str]:
        return [i for i, item in everything.items() if predicate(item)]

    assert await ids(severity=["high", "critical"]) == where(lambda f: f["severity"] in ("high", "critical"))
    assert await ids(min_severity="high") == where(lambda f: f["severity"] in ("high", "critical"))
    assert await ids(category="Crypto_Mining") == where(lambda f: f["category"] == "Crypto_Mining")
    assert len(await ids(category="Crypto_Mining")) == 4
    assert await ids(namespace=["shop", "default"]) == where(
        lambda f: f["workload"]["namespace"] in ("shop", "default")
    )
    assert await ids(cluster="staging") == where(lambda f: f["workload"]["cluster"] == "staging")
    assert await ids(kind="attack_technique") == where(lambda f: f["kind"] == "attack_technique")
    assert len(await ids(kind="attack_technique")) == 4
    assert await ids(detector="source") == where(lambda f: f["detector"] == "source")
    assert await ids(technique="T1611") == where(lambda f: "T1611" in f["techniques"])
    since, until = (T0 + timedelta(minutes=5)).isoformat(), (T0 + timedelta(minutes=9)).isoformat()
    in_range = await ids(since=since, until=until)
    assert in_range == where(lambda f: since <= f["event_time"].replace("Z", "+00:00") < until)
    assert len(in_range) == 4
    combined = await ids(namespace="payments", min_severity="medium", cluster="prod")
    assert combined == where(
        lambda f: (
            f["workload"]["namespace"] == "payments"
            and f["severity"] in ("medium", "high", "critical")
            and f["workload"]["cluster"] == "prod"
        )
    )
    assert await ids(namespace="nowhere") == []


async def test_one_finding(api: Api) -> None:
    first = (await api.get("/v1/findings", limit=1)).json()["items"][0]
    got = await api.get(f"/v1/findings/{first['id']}")
    assert got.status_code == 200
    assert got.json() == first
    missing = await api.get("/v1/findings/f-0000")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "finding_not_found"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "2026-03-01T12:10:00Z", "until": "2026-03-01T12:00:00Z"}, "invalid_time_range"),
        ({"since": "2026-03-01T12:00:00"}, "validation_error"),  # no time zone
        ({"severity": "urgent"}, "validation_error"),
        ({"kind": "rumour"}, "validation_error"),
        ({"technique": "T12"}, "validation_error"),
        ({"limit": 0}, "validation_error"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ],
)
async def test_bad_queries_are_422_with_a_reason(api: Api, params: dict[str, Any], reason: str) -> None:
    response = await api.get("/v1/findings", **params)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == reason


async def test_auth(api: Api) -> None:
    for path in ("/v1/findings", "/v1/findings/f-1", "/openapi.json"):
        response = await api.get(path, token=None)
        assert response.status_code == 401
        assert response.json()["reason"] == "missing_token"
    assert (await api.get("/v1/findings", token="wrong-token-0123456789abcdef")).status_code == 401
    forbidden = await api.get("/v1/findings", token=WRITE_ONLY)
    assert forbidden.status_code == 403
    assert forbidden.json()["reason"] == "insufficient_scope"
    assert (await api.get("/v1/findings", token=WRITE)).status_code == 200
    spec = (await api.get("/openapi.json")).json()
    assert {"/v1/findings", "/v1/findings/{finding_id}"} <= set(spec["paths"])
    assert (await api.get("/healthz", token=None)).status_code == 200
