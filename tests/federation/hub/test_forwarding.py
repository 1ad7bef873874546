"""Forwarded events and findings: each item kept once, events onto the hub's ``ingest:events``
through the outbox (exactly what analysis consumes, with the spoke's cluster), findings stored,
bad items rejected one by one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from prometheus_client import REGISTRY
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.federation.v1 import ForwardBatch, ForwardKind, Rejected
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.names import stream_key
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.hub.forwarding.models import ForwardedFindingRow
from qcdr_federation.hub.forwarding.service import check
from qcdr_federation.hub.install import prune_received
from qcdr_federation.settings import FederationSettings
from redis.asyncio import Redis
from sqlalchemy import select

from tests.federation.conftest import READ_HEADERS, make_hub_settings, register_spoke

pytestmark = [pytest.mark.db, pytest.mark.redis]


@pytest.fixture
def hub_settings(federation_db: str, redis_url: str, redis_prefix: str) -> FederationSettings:
    return make_hub_settings(federation_db, redis_url, redis_prefix, forward_max_bytes=1_000_000)


def event(i: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"evt-{i}",
        "source": "tetragon",
        "category": "process_exec",
        "severity": "high",
        "event_time": datetime(2026, 12, 1, 12, 0, i % 60, tzinfo=UTC).isoformat(),
        "workload": {
            "cluster": "lies-about-its-cluster",
            "namespace": "shop",
            "image_digest": "sha256:" + "a" * 64,
        },
        "techniques": ["T1059"],
    }
    body.update(overrides)
    return body


def finding(i: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"fnd-{i}",
        "kind": "attack_technique",
        "detector": "rules",
        "category": "execution",
        "severity": "critical",
        "event_time": datetime(2026, 12, 1, 12, 0, i % 60, tzinfo=UTC).isoformat(),
        "evidence_event_ids": [f"evt-{i}"],
        "workload": {"namespace": "shop"},
    }
    body.update(overrides)
    return body


def forwarded(kind: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("qcdr_federation_forwarded_total", {"kind": kind, "outcome": outcome})
        or 0.0
    )


async def outbox_envelopes(hub_app: Any) -> list[tuple[str, Envelope]]:
    async with hub_app.state.engine.connect() as conn:
        rows = (await conn.execute(select(OUTBOX.c.stream, OUTBOX.c.data).order_by(OUTBOX.c.id))).all()
    return [(r.stream, Envelope.from_json(bytes(r.data))) for r in rows]


async def test_events_are_kept_once_and_published_as_ingest_announces_them(
    hub_client: httpx.AsyncClient, hub_app: Any, hub_settings: FederationSettings, redis_url: str
) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    batch = {"kind": "events", "items": [event(1), event(2), event(3)]}
    accepted_before = forwarded("events", "accepted")
    duplicates_before = forwarded("events", "duplicate")

    first = await hub_client.post("/federation/v1/forward", json=batch, headers=spoke.headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    # at least once: the spoke sends the same batch again (its POST timed out after we stored it)
    again = await hub_client.post("/federation/v1/forward", json=batch, headers=spoke.headers)
    assert again.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    assert forwarded("events", "accepted") == accepted_before + 3
    assert forwarded("events", "duplicate") == duplicates_before + 3

    envelopes = await outbox_envelopes(hub_app)
    assert len(envelopes) == 3  # one outbox row per event, whatever the retries
    for stream, envelope in envelopes:
        assert stream == "ingest:events"
        assert envelope.type == "ingest.event_observed"
        assert envelope.source == "federation"
        assert envelope.cluster_id == "eu-1"
        assert envelope.correlation_id == envelope.id
        assert envelope.causation_id is None
        payload = envelope.payload_as(SecurityEvent)
        assert payload.workload.cluster == "eu-1"  # forced to the authenticated spoke
        assert envelope.occurred_at == payload.event_time
    assert sorted(e.payload["id"] for _, e in envelopes) == ["evt-1", "evt-2", "evt-3"]

    # the relay in the app lifespan publishes them onto the hub's stream
    redis = Redis.from_url(redis_url)
    try:
        key = stream_key(hub_settings.redis_prefix, "ingest:events")
        for _ in range(100):
            if await redis.xlen(key) >= 3:
                break
            await asyncio.sleep(0.05)
        entries = await redis.xrange(key)
    finally:
        await redis.aclose()
    assert entries is not None
    assert len(entries) == 3
    published = Envelope.from_fields(cast("dict[bytes, bytes]", entries[0][1]))
    assert published.type == "ingest.event_observed"
    assert published.payload["workload"]["cluster"] == "eu-1"


async def test_the_same_id_from_two_clusters_is_two_items(
    hub_client: httpx.AsyncClient, hub_app: Any
) -> None:
    one = await register_spoke(hub_client, "eu-1")
    two = await register_spoke(hub_client, "us-1")
    batch = {"kind": "events", "items": [event(1)]}
    assert (await hub_client.post("/federation/v1/forward", json=batch, headers=one.headers)).json()[
        "accepted"
    ] == 1
    assert (await hub_client.post("/federation/v1/forward", json=batch, headers=two.headers)).json()[
        "accepted"
    ] == 1
    clusters = sorted(e.cluster_id for _, e in await outbox_envelopes(hub_app))
    assert clusters == ["eu-1", "us-1"]


async def test_bad_items_are_rejected_one_by_one(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    items = [
        event(1),
        event(2, severity="apocalyptic"),
        {"id": "no-other-fields"},
        event(3, techniques=["not-a-technique"]),
        event(4, unexpected="field"),
        event(1),  # the same id twice in one batch: kept once
        event(5),
    ]
    rejected_before = forwarded("events", "rejected")
    response = await hub_client.post(
        "/federation/v1/forward", json={"kind": "events", "items": items}, headers=spoke.headers
    )
    assert response.status_code == 200
    ack = response.json()
    assert ack["accepted"] == 2
    assert ack["duplicates"] == 1
    assert [r["index"] for r in ack["rejected"]] == [1, 2, 3, 4]
    reasons = {r["index"]: r["reason"] for r in ack["rejected"]}
    assert reasons[1].startswith("severity:")
    assert "more" in reasons[2]  # several fields missing: the first, and how many more
    assert reasons[3].startswith("techniques")
    assert reasons[4].startswith("unexpected:")
    assert forwarded("events", "rejected") == rejected_before + 4
    assert sorted(e.payload["id"] for _, e in await outbox_envelopes(hub_app)) == ["evt-1", "evt-5"]


@pytest.mark.parametrize(
    ("kind", "odd", "reason"),
    [
        ("findings", finding(2, title="a\x00b"), "title: contains a NUL character"),
        (
            "findings",
            finding(2, attributes={"n": 2**64}),
            "attributes.n: integer is outside the 64-bit range",
        ),
        ("findings", finding(2, attributes={"a\x00": 1}), "attributes.<key>: contains a NUL character"),
        ("events", event(2, raw={"n": -(2**63) - 1}), "raw.n: integer is outside the 64-bit range"),
    ],
    ids=["nul-in-text", "int-past-64-bits", "nul-in-a-key", "int-below-64-bits"],
)
async def test_an_item_that_cannot_be_stored_is_rejected_alone(
    hub_client: httpx.AsyncClient, kind: str, odd: dict[str, Any], reason: str
) -> None:
    """Valid by the model but not storable (PostgreSQL refuses NUL, orjson integers past 64 bits,
    UTF-8 lone surrogates): the item's own rejection. Failing the batch would make the spoke
    dead-letter (422) or retry forever (500) every other item of it."""
    spoke = await register_spoke(hub_client, "eu-1")
    good = event(1) if kind == "events" else finding(1)
    response = await hub_client.post(
        "/federation/v1/forward", json={"kind": kind, "items": [good, odd]}, headers=spoke.headers
    )
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["accepted"] == 1
    assert [r["index"] for r in ack["rejected"]] == [1]
    assert ack["rejected"][0]["reason"].startswith(reason)


def test_a_lone_surrogate_is_rejected_alone() -> None:
    """The route's JSON parser already refuses a body with one; check() still holds it per item."""
    checked = check(
        ForwardBatch(kind=ForwardKind.EVENTS, items=[event(1), event(2, raw={"x": "\ud800"})]), "eu-1"
    )
    assert [i for i, _ in checked.items] == [0]
    assert checked.rejected == [Rejected(index=1, reason="raw.x: is not valid UTF-8 (an unpaired surrogate)")]


async def test_findings_are_stored_for_the_console(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    batch = {"kind": "findings", "items": [finding(1), finding(2), finding(3, kind="not-a-kind")]}
    ack = (await hub_client.post("/federation/v1/forward", json=batch, headers=spoke.headers)).json()
    assert ack["accepted"] == 2
    assert [r["index"] for r in ack["rejected"]] == [2]
    again = (await hub_client.post("/federation/v1/forward", json=batch, headers=spoke.headers)).json()
    assert again["accepted"] == 0
    assert again["duplicates"] == 2
    async with hub_app.state.sessions() as session:
        rows = (await session.scalars(select(ForwardedFindingRow).order_by(ForwardedFindingRow.id))).all()
    assert [r.id for r in rows] == ["fnd-1", "fnd-2"]
    assert all(r.cluster_id == spoke.cluster_id for r in rows)
    stored = Finding.model_validate(rows[0].payload)
    assert stored.workload.cluster == "eu-1"
    assert stored.severity.value == "critical"
    assert rows[0].category == "execution"
    assert rows[0].kind == "attack_technique"
    assert await outbox_envelopes(hub_app) == []  # findings do not go onto ingest:events


async def test_bad_batches(hub_client: httpx.AsyncClient, hub_settings: FederationSettings) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    post = hub_client.post
    empty = await post("/federation/v1/forward", json={"kind": "events", "items": []}, headers=spoke.headers)
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["loc"][:2] == ["body", "items"]
    unknown = await post(
        "/federation/v1/forward", json={"kind": "logs", "items": [{}]}, headers=spoke.headers
    )
    assert unknown.status_code == 422
    broken = await post(
        "/federation/v1/forward",
        content=b"{not json",
        headers={**spoke.headers, "content-type": "application/json"},
    )
    assert broken.status_code == 422
    too_many = {"kind": "events", "items": [event(i) for i in range(1001)]}
    assert (await post("/federation/v1/forward", json=too_many, headers=spoke.headers)).status_code == 422
    huge = b'{"kind": "events", "items": [' + b" " * hub_settings.forward_max_bytes + b"]}"
    response = await post(
        "/federation/v1/forward", content=huge, headers={**spoke.headers, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["reason"] == "content_too_large"
    # no credential: refused before the body is read
    assert (
        await post("/federation/v1/forward", json={"kind": "events", "items": [event(1)]})
    ).status_code == 401


async def test_old_dedupe_rows_are_forgotten(
    hub_client: httpx.AsyncClient, hub_app: Any, hub_settings: FederationSettings
) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    batch = {"kind": "events", "items": [event(1)]}
    assert (await hub_client.post("/federation/v1/forward", json=batch, headers=spoke.headers)).json()[
        "accepted"
    ] == 1
    sessions = hub_app.state.sessions
    assert await prune_received(sessions, hub_settings, datetime.now(UTC)) == 0  # still fresh
    later = datetime.now(UTC) + timedelta(seconds=hub_settings.received_retention_s + 1)
    assert await prune_received(sessions, hub_settings, later) == 1
    assert (await hub_client.post("/federation/v1/forward", json=batch, headers=spoke.headers)).json()[
        "accepted"
    ] == 1


async def test_forwarded_findings_are_listed_newest_first_by_cluster(hub_client: httpx.AsyncClient) -> None:
    eu = await register_spoke(hub_client, "eu-1")
    us = await register_spoke(hub_client, "us-1")
    for spoke, seconds in ((eu, (1, 3, 5)), (us, (2, 4))):
        items = [finding(s, severity="high" if s == 4 else "critical") for s in seconds]
        ack = await hub_client.post(
            "/federation/v1/forward", json={"kind": "findings", "items": items}, headers=spoke.headers
        )
        assert ack.json()["accepted"] == len(items)

    async def listed(**params: Any) -> dict[str, Any]:
        response = await hub_client.get("/v1/forwarded-findings", params=params, headers=READ_HEADERS)
        assert response.status_code == 200, response.text
        return cast("dict[str, Any]", response.json())

    everything = await listed()
    assert [(i["cluster"], i["finding"]["id"]) for i in everything["items"]] == [
        ("eu-1", "fnd-5"),
        ("us-1", "fnd-4"),
        ("eu-1", "fnd-3"),
        ("us-1", "fnd-2"),
        ("eu-1", "fnd-1"),
    ]
    assert everything["items"][0]["finding"]["workload"]["cluster"] == "eu-1"
    assert [i["finding"]["id"] for i in (await listed(cluster="us-1"))["items"]] == ["fnd-4", "fnd-2"]
    assert [i["finding"]["id"] for i in (await listed(severity="high"))["items"]] == ["fnd-4"]
    assert (await listed(cluster="nobody"))["items"] == []
    # pages of two, the cursor carrying event time and cluster/id
    first = await listed(limit=2)
    second = await listed(limit=2, cursor=first["next_cursor"])
    third = await listed(limit=2, cursor=second["next_cursor"])
    pages = [i["finding"]["id"] for page in (first, second, third) for i in page["items"]]
    assert pages == ["fnd-5", "fnd-4", "fnd-3", "fnd-2", "fnd-1"]
    assert third["next_cursor"] is None
    for bad in ({"severity": "apocalyptic"}, {"cluster": "Not A Name"}, {"cursor": "garbage"}, {"kind": "x"}):
        refused = await hub_client.get("/v1/forwarded-findings", params=bad, headers=READ_HEADERS)
        assert refused.status_code == 422, bad
    assert (await hub_client.get("/v1/forwarded-findings")).status_code == 401
    assert (await hub_client.get("/v1/forwarded-findings", headers=eu.headers)).status_code == 401
