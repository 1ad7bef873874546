"""GET /v1/events (filters, cursor pagination) and GET /v1/events/{event_id}."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.contracts.events.v1 import Severity
from qcdr_ingest.events.schemas import EventRead

from tests.ingest.events.factories import falco_alerts, falco_rules, tetragon_events
from tests.ingest.service.conftest import Client

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.shared]


@pytest.fixture
async def stored(client: Client, shared_path: Path) -> list[dict[str, Any]]:
    """Tetragon execs in two clusters, and one Falco alert per real rule (every priority)."""
    for body, params in (
        (tetragon_events(shared_path, 12), {}),
        (tetragon_events(shared_path, 8, start=12), {"cluster": "edge"}),
    ):
        assert (await client.post("/v1/events/tetragon", json=body, params=params)).json()["stored"] == len(
            body
        )
    alerts = list(falco_alerts(shared_path, len(falco_rules(shared_path))))
    assert (await client.post("/v1/events/falco", json=alerts)).json()["stored"] == len(alerts)
    return await all_pages(client, {}, limit=1000)


async def all_pages(client: Client, params: dict[str, Any], *, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/events", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def order_key(item: dict[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(item["event_time"]), item["id"]


async def test_pages_cover_everything_once_newest_first(client: Client, stored: list[dict[str, Any]]) -> None:
    assert len(stored) > 100
    for item in stored:
        EventRead.model_validate(item)  # the documented schema, received_at included
    assert stored == sorted(stored, key=order_key, reverse=True)
    paged = await all_pages(client, {}, limit=17)
    assert [i["id"] for i in paged] == [i["id"] for i in stored]


def expected(stored: list[dict[str, Any]], **match: Any) -> list[str]:
    out = []
    for item in stored:
        ok = True
        for key, wanted in match.items():
            if key == "min_rank":
                ok &= Severity(item["severity"]).rank >= wanted
            elif key == "since":
                ok &= datetime.fromisoformat(item["event_time"]) >= wanted
            elif key == "until":
                ok &= datetime.fromisoformat(item["event_time"]) < wanted
            elif key == "namespace":
                ok &= item["workload"]["namespace"] in wanted
            elif key == "cluster":
                ok &= item["workload"]["cluster"] in wanted
            else:
                ok &= item[key] in wanted
        if ok:
            out.append(item["id"])
    return out


async def test_filters(client: Client, stored: list[dict[str, Any]]) -> None:
    times = sorted(datetime.fromisoformat(i["event_time"]) for i in stored)
    since, until = times[5], times[30]
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"source": "falco"}, {"source": ["falco"]}),
        ({"severity": ["critical", "low"]}, {"severity": ["critical", "low"]}),
        ({"min_severity": "medium"}, {"min_rank": Severity.MEDIUM.rank}),
        ({"min_severity": "high", "severity": ["low", "critical"]}, {"severity": ["critical"]}),
        ({"category": "process_exec"}, {"category": ["process_exec"]}),
        ({"namespace": ["shop"]}, {"namespace": ["shop"]}),
        ({"cluster": "edge"}, {"cluster": ["edge"]}),
        ({"since": since.isoformat(), "until": until.isoformat()}, {"since": since, "until": until}),
        (
            {"source": "tetragon", "cluster": ["test-cluster", "edge"], "namespace": "default"},
            {"source": ["tetragon"], "cluster": ["test-cluster", "edge"], "namespace": ["default"]},
        ),
    ]
    for params, match in cases:
        want = expected(stored, **match)
        got = await all_pages(client, params, limit=5)
        assert [i["id"] for i in got] == want, params
        assert want or params == {}, f"{params} selects nothing: a useless case"


async def test_one_event(client: Client, stored: list[dict[str, Any]]) -> None:
    wanted = stored[3]
    response = await client.get(f"/v1/events/{wanted['id']}")
    assert response.status_code == 200
    assert response.json() == wanted
    missing = await client.get("/v1/events/tetragon:0000")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "not_found"


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor!"},
        {"cursor": "WzEsImQiLCJ4IiwieSJd"},
        {"limit": 0},
        {"limit": 5000},
        {"severity": "loud"},
        {"since": "yesterday"},
        {"since": "2026-03-01T12:00:00"},
    ],
)
async def test_bad_queries_are_422(client: Client, params: dict[str, Any]) -> None:
    response = await client.get("/v1/events", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] in ("validation_error", "invalid_cursor")
