"""POST /v1/events/{source}: storage, idempotency, publication through the outbox and the real
Redis, and every refusal (404, 413, 415, 422, 429, 401/403) with its reason and nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.streams import Envelope, OutboxRelay, stream_key
from redis.asyncio import Redis

from tests.ingest.events.factories import (
    HUBBLE_SYN,
    falco_alerts,
    hubble_flow,
    tetragon_corpus,
    tetragon_events,
)
from tests.ingest.service.conftest import READ_TOKEN, Client, MakeClient, eventually

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.shared]

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(items: list[object]) -> bytes:
    return b"\n".join(orjson.dumps(item) for item in items) + b"\n"


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    events = await db.fetchval("SELECT count(*) FROM ingest_events")
    outbox = await db.fetchval("SELECT count(*) FROM ingest_outbox WHERE stream = 'ingest:events'")
    return events, outbox


async def test_the_tetragon_corpus_is_stored_once_and_published_once(
    client: Client,
    db: asyncpg.Connection,
    relay: OutboxRelay,
    redis_client: Redis,
    redis_prefix: str,
    shared_path: Path,
) -> None:
    raws = [raw for _, raw in tetragon_corpus(shared_path)]
    first = await client.post("/v1/events/tetragon", json=raws)
    assert first.status_code == 202, first.text
    result = first.json()
    assert result["received"] == len(raws)
    assert result["rejected"] == 0
    assert result["stored"] + result["duplicates"] == result["accepted"] == len(raws)
    stored = result["stored"]
    assert await counts(db) == (stored, stored)

    # the same batch again (an exporter retrying): nothing new stored, nothing new queued
    again = await client.post("/v1/events/tetragon", content=ndjson(raws), headers=NDJSON)
    assert again.status_code == 202
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, len(raws))
    assert await counts(db) == (stored, stored)

    assert await relay.publish_pending() == stored
    assert await relay.publish_pending() == 0
    entries = await redis_client.xrange(stream_key(redis_prefix, "ingest:events"))
    assert len(entries) == stored
    envelopes = [Envelope.from_fields(fields) for _, fields in entries]
    assert all(fields[b"type"] == b"ingest.event_observed" for _, fields in entries)
    outbox_ids = {r["envelope_id"] for r in await db.fetch("SELECT envelope_id FROM ingest_outbox")}
    assert {e.id for e in envelopes} == outbox_ids
    published = {e.payload_as(SecurityEvent).id: e for e in envelopes}
    rows = {
        r["id"]: r for r in await db.fetch("SELECT id, payload::text AS payload, cluster FROM ingest_events")
    }
    assert set(published) == set(rows)
    for event_id, envelope in published.items():
        event = envelope.payload_as(SecurityEvent)
        assert event == SecurityEvent.model_validate_json(rows[event_id]["payload"])
        assert (envelope.source, envelope.version, envelope.cluster_id) == ("ingest", 1, "test-cluster")
        assert envelope.occurred_at == event.event_time
        assert envelope.correlation_id == envelope.id


async def test_falco_alerts_one_by_one_and_in_batches(
    client: Client, db: asyncpg.Connection, shared_path: Path
) -> None:
    alerts = list(falco_alerts(shared_path, 120))
    single = await client.post("/v1/events/falco", json=alerts[0])  # Falco's http_output: one object
    assert single.status_code == 202
    assert single.json()["stored"] == 1
    batch = await client.post("/v1/events/falco", json=alerts)
    assert (batch.json()["stored"], batch.json()["duplicates"]) == (119, 1)
    severities = {r["severity"] for r in await db.fetch("SELECT DISTINCT severity FROM ingest_events")}
    assert severities >= {"medium", "low", "critical"}


async def test_bad_items_are_reported_and_the_good_ones_kept(
    client: Client, db: asyncpg.Connection, shared_path: Path
) -> None:
    good = tetragon_events(shared_path, 3)
    body = b"\n".join(
        [
            orjson.dumps(good[0]),
            b"{not json",
            orjson.dumps({"process_loader": {}}),
            b"",
            orjson.dumps(good[1]),
            orjson.dumps(good[1]),
            orjson.dumps(good[2]),
            b"{also not json",  # a second bad line: at its own index, not counted twice
        ]
    )
    response = await client.post("/v1/events/tetragon", content=body, headers=NDJSON)
    assert response.status_code == 202
    result = response.json()
    assert (result["received"], result["accepted"], result["stored"], result["duplicates"]) == (7, 4, 3, 1)
    assert result["rejected"] == 3
    assert [(r["index"], r["line"]) for r in result["rejections"]] == [(1, 2), (2, 3), (6, 8)]
    assert "not valid JSON" in result["rejections"][0]["reason"]
    assert "not a supported Tetragon event" in result["rejections"][1]["reason"]
    assert await counts(db) == (3, 3)


async def test_the_rejection_list_is_capped_but_counted(
    make_client: MakeClient, db: asyncpg.Connection, shared_path: Path
) -> None:
    items: list[object] = [{"bad": i} for i in range(30)] + tetragon_events(shared_path, 1)
    async with make_client(events_rejections_listed=5) as (client, _):
        result = (await client.post("/v1/events/tetragon", json=items)).json()
    assert (result["rejected"], len(result["rejections"]), result["stored"]) == (30, 5, 1)


async def test_unknown_source_lists_the_known_ones(client: Client) -> None:
    response = await client.post("/v1/events/syslog", json=[{}])
    assert response.status_code == 404
    problem = response.json()
    assert problem["reason"] == "unknown_source"
    assert problem["known_sources"] == ["dns", "falco", "hubble", "qualys", "tetragon"]
    assert response.headers["content-type"] == "application/problem+json"
    sources = await client.get("/v1/sources", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert [s["name"] for s in sources.json()] == ["dns", "falco", "hubble", "qualys", "tetragon"]


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_byte_limit_with_and_without_content_length(
    make_client: MakeClient, db: asyncpg.Connection, shared_path: Path
) -> None:
    body = ndjson(tetragon_events(shared_path, 20))
    async with make_client(events_max_bytes=4096) as (client, _):
        declared = await client.post("/v1/events/tetragon", content=body, headers=NDJSON)
        streamed = await client.post("/v1/events/tetragon", content=chunks(body), headers=NDJSON)
        small = await client.post(
            "/v1/events/tetragon", content=ndjson(tetragon_events(shared_path, 1)), headers=NDJSON
        )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["reason"] == "content_too_large"
    assert small.status_code == 202
    assert await counts(db) == (1, 1)


async def test_count_limit(make_client: MakeClient, db: asyncpg.Connection, shared_path: Path) -> None:
    async with make_client(events_max_items=5) as (client, _):
        response = await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 6))
        ok = await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 5))
    assert response.status_code == 413
    assert response.json()["reason"] == "too_many_items"
    assert "at most 5" in response.json()["detail"]
    assert ok.status_code == 202
    assert await counts(db) == (5, 5)


async def test_rate_limit_per_token_and_source(
    make_client: MakeClient, db: asyncpg.Connection, shared_path: Path
) -> None:
    async with make_client(events_rate_per_s=0.5, events_rate_burst=10, events_max_items=10) as (client, _):
        first = await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 8))
        second = await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 8, start=8))
        third = await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 2, start=16))
        other_source = await client.post("/v1/events/falco", json=list(falco_alerts(shared_path, 8)))
    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json()["reason"] == "rate_limited"
    assert int(second.headers["Retry-After"]) >= 4  # 6 missing tokens at 0.5/s
    assert third.status_code == 202  # what fits still passes
    assert other_source.status_code == 202
    assert await counts(db) == (18, 18)


@pytest.mark.parametrize(
    ("content", "headers", "status", "reason"),
    [
        (b"[{", {"Content-Type": "application/json"}, 422, "invalid_body"),
        (b'"just a string"', {"Content-Type": "application/json"}, 422, "invalid_body"),
        (b"a,b\n1,2\n", {"Content-Type": "text/csv"}, 415, "unsupported_media_type"),
        (b'[{"x": 1}, 3]', {"Content-Type": "application/json"}, 422, "no_valid_items"),
        (b"nope\n", NDJSON, 422, "no_valid_items"),
    ],
)
async def test_unusable_bodies_are_refused_whole(
    client: Client, db: asyncpg.Connection, content: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await client.post("/v1/events/tetragon", content=content, headers=headers)
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["reason"] == reason
    if reason == "no_valid_items":
        assert problem["rejections"]
        assert all(r["reason"] for r in problem["rejections"])
    assert await counts(db) == (0, 0)


async def test_empty_batches_are_fine(client: Client) -> None:
    for content, headers in ((b"[]", {"Content-Type": "application/json"}), (b"\n\n", NDJSON)):
        response = await client.post("/v1/events/falco", content=content, headers=headers)
        assert response.status_code == 202
        assert response.json()["received"] == 0


async def test_a_missing_content_type_is_sniffed(client: Client, shared_path: Path) -> None:
    events = tetragon_events(shared_path, 2)
    as_array = await client.post("/v1/events/tetragon", content=orjson.dumps(events))
    as_lines = await client.post(
        "/v1/events/tetragon", content=ndjson(tetragon_events(shared_path, 2, start=2))
    )
    assert (as_array.json()["stored"], as_lines.json()["stored"]) == (2, 2)


async def test_tokens_and_scopes(make_client: MakeClient, db: asyncpg.Connection, shared_path: Path) -> None:
    events = tetragon_events(shared_path, 1)
    async with make_client(token=None) as (anonymous, _):
        assert (await anonymous.post("/v1/events/tetragon", json=events)).status_code == 401
        assert (await anonymous.get("/v1/events")).status_code == 401
        assert (await anonymous.get("/healthz")).status_code == 200
    async with make_client(token=READ_TOKEN) as (reader, _):
        refused = await reader.post("/v1/events/tetragon", json=events)
        assert refused.status_code == 403
        assert refused.json()["required_scope"] == "write"
        assert (await reader.get("/v1/events")).status_code == 200
    assert await counts(db) == (0, 0)


async def test_the_cluster_of_a_request(client: Client, db: asyncpg.Connection, shared_path: Path) -> None:
    await client.post(
        "/v1/events/tetragon", params={"cluster": "edge-7"}, json=tetragon_events(shared_path, 1)
    )
    assert await db.fetchval("SELECT cluster FROM ingest_events") == "edge-7"


async def test_the_relay_runs_in_the_app_and_publishes_promptly(
    make_client: MakeClient, redis_client: Redis, redis_prefix: str, shared_path: Path
) -> None:
    async with make_client(background_workers=True) as (client, app):
        assert app.state.relay is not None
        response = await client.post("/v1/events/tetragon", json=tetragon_events(shared_path, 25))
        assert response.json()["stored"] == 25
        key = stream_key(redis_prefix, "ingest:events")

        async def published() -> bool:
            return bool(await redis_client.xlen(key) == 25)

        await eventually(published)


async def test_a_nul_character_costs_only_its_own_item(
    client: Client, db: asyncpg.Connection, shared_path: Path
) -> None:
    alerts = list(falco_alerts(shared_path, 3))
    alerts[1]["output"] = "evil\u0000output"
    alerts[2]["output_fields"]["proc.cmdline"] = "echo \\u0000 is just text"
    response = await client.post("/v1/events/falco", json=alerts)
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["stored"], result["rejected"]) == (2, 1)
    assert result["rejections"][0]["index"] == 1
    assert "NUL" in result["rejections"][0]["reason"]
    assert await counts(db) == (2, 2)


async def test_an_event_stamped_ahead_of_the_clock_costs_only_its_own_item(
    client: Client, db: asyncpg.Connection, shared_path: Path
) -> None:
    """A node clock set years ahead (or a crafted body) would end profiles' learning at once and
    hold findings open for years: refused with the reason, the rest stored."""
    alerts = list(falco_alerts(shared_path, 3))
    alerts[0]["time"] = "2199-01-01T00:00:00.000000000Z"
    alerts[1]["time"] = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()  # within the skew
    response = await client.post("/v1/events/falco", json=alerts)
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["stored"], result["rejected"]) == (2, 1)
    assert result["rejections"][0]["index"] == 0
    assert "ahead of this server's clock (at most 300 s" in result["rejections"][0]["reason"]
    assert await counts(db) == (2, 2)


async def test_a_hubble_connection_is_one_event_and_its_other_flows_are_ignored(
    client: Client, db: asyncpg.Connection
) -> None:
    """`hubble observe -o json` piped in unfiltered: the SYN (twice: two observation points) is
    stored once, the SYN-ACK and ACKs are counted as ignored, a malformed flow is rejected."""
    ack = {"TCP": {"source_port": 60524, "destination_port": 5432, "flags": {"ACK": True}}}
    synack = {"TCP": {"source_port": 5432, "destination_port": 60524, "flags": {"SYN": True, "ACK": True}}}
    flows = [
        HUBBLE_SYN,
        hubble_flow(trace_observation_point="TO_ENDPOINT", uuid="second-copy"),
        hubble_flow(l4=synack, is_reply=True),
        hubble_flow(l4=ack),
        hubble_flow(l4=ack, traffic_direction="INGRESS"),
        hubble_flow(IP={"source": "10.0.1.235"}),
    ]
    response = await client.post("/v1/events/hubble", content=ndjson(flows), headers=NDJSON)
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["received"], result["stored"], result["duplicates"]) == (6, 1, 1)
    assert (result["ignored"], result["rejected"]) == (3, 1)
    assert "IP.destination" in result["rejections"][0]["reason"]
    assert await counts(db) == (1, 1)
    # a batch of nothing but the middle of connections is fine, not refused
    quiet = await client.post("/v1/events/hubble", content=ndjson(flows[2:5]), headers=NDJSON)
    assert quiet.status_code == 202, quiet.text
    assert (quiet.json()["stored"], quiet.json()["ignored"]) == (0, 3)
    # nothing usable and nothing ignored is still refused whole
    refused = await client.post("/v1/events/hubble", content=ndjson(flows[5:]), headers=NDJSON)
    assert refused.status_code == 422
