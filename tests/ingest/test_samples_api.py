"""POST /v1/metrics/{source}: both sources, the outbox rows and the envelopes the relay publishes
on ingest:samples, per-sample rejections, and every refusal (400, 401/403, 404, 413, 415, 422, 429)
with its reason and nothing queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY
from qcdr_common.contracts.samples.v1 import MAX_SAMPLES_PER_ENVELOPE, WorkloadSamples
from qcdr_common.streams import Envelope, OutboxRelay, stream_key
from qcdr_ingest.events.service import NUL_REASON
from redis.asyncio import Redis

from tests.ingest.service import conftest as service_fixtures
from tests.ingest.service.conftest import READ_TOKEN, Client, MakeClient, eventually

# The ingest service fixtures (migrated database emptied per test, the app with its real
# lifespan, the relay) live in tests/ingest/service; this module uses them as they are.
ingest_database_url = service_fixtures.ingest_database_url
db = service_fixtures.db
make_ingest_settings = service_fixtures.make_ingest_settings
make_client = service_fixtures.make_client
client = service_fixtures.client
relay = service_fixtures.relay

pytestmark = [pytest.mark.db, pytest.mark.redis]

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T0_MS = 1_777_636_800_000
DIGEST = "sha256:" + "ab" * 32


def sample(offset_s: int = 0, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "time": (T0 + timedelta(seconds=offset_s)).isoformat(),
        "workload": {"namespace": "shop", "owner_kind": "Deployment", "owner_name": "cart", "pod": "cart-1"},
        "values": {"cpu_cores": 0.25, "memory_bytes": 1e8},
    }
    item.update(overrides)
    return item


def series(name: str, points: list[tuple[int, Any]], **labels: str) -> dict[str, Any]:
    base = {"namespace": "shop", "pod": "cart-1", "container": "app"}
    pairs = {"__name__": name, **base, **labels}
    return {
        "labels": [{"name": k, "value": v} for k, v in pairs.items()],
        "samples": [{"value": v, "timestamp": T0_MS + s * 1000} for s, v in points],
    }


async def outbox(db: asyncpg.Connection) -> list[Envelope]:
    rows = await db.fetch(
        "SELECT stream, type, data FROM ingest_outbox WHERE stream = 'ingest:samples' ORDER BY id"
    )
    assert all(r["type"] == "ingest.samples_received" for r in rows)
    return [Envelope.from_json(bytes(r["data"])) for r in rows]


async def published(redis_client: Redis, redis_prefix: str) -> list[Envelope]:
    entries: Any = await redis_client.xrange(stream_key(redis_prefix, "ingest:samples"))
    assert all(fields[b"type"] == b"ingest.samples_received" for _, fields in entries)
    return [Envelope.from_fields(fields) for _, fields in entries]


def counted(source: str, outcome: str) -> float:
    labels = {"source": source, "outcome": outcome}
    return REGISTRY.get_sample_value("qcdr_ingest_samples_total", labels) or 0.0


async def test_json_samples_are_queued_in_the_outbox_and_published(
    client: Client, db: asyncpg.Connection, relay: OutboxRelay, redis_client: Redis, redis_prefix: str
) -> None:
    before = counted("json", "accepted")
    response = await client.post("/v1/metrics/json", json={"samples": [sample(30), sample(0)]})
    assert response.status_code == 202, response.text
    assert response.json() == {
        "source": "json",
        "received": 2,
        "accepted": 2,
        "ignored": 0,
        "rejected": [],
        "rejected_total": 0,
        "published": 2,
        "envelopes": 1,
    }
    assert counted("json", "accepted") == before + 2
    queued = await outbox(db)
    assert len(queued) == 1

    assert await relay.publish_pending() == 1
    [envelope] = await published(redis_client, redis_prefix)
    assert envelope.id == queued[0].id
    assert (envelope.type, envelope.version, envelope.source) == ("ingest.samples_received", 1, "ingest")
    assert envelope.cluster_id == "test-cluster"
    assert envelope.occurred_at == T0 + timedelta(seconds=30)  # the newest sample's time
    payload = envelope.payload_as(WorkloadSamples)
    assert payload.source == "json"
    assert [s.time for s in payload.samples] == [T0, T0 + timedelta(seconds=30)]  # oldest first
    first = payload.samples[0]
    assert first.workload.cluster == "test-cluster"  # filled in: the sample named none
    assert (first.workload.owner_kind, first.workload.owner_name) == ("Deployment", "cart")
    assert first.values == {"cpu_cores": 0.25, "memory_bytes": 1e8}


async def test_the_cluster_query_parameter_fills_samples_that_name_none(
    client: Client, db: asyncpg.Connection
) -> None:
    named = sample(5)
    named["workload"] = {**named["workload"], "cluster": "edge-1"}
    response = await client.post(
        "/v1/metrics/json", params={"cluster": "edge-7"}, json={"samples": [sample(), named]}
    )
    assert response.json()["envelopes"] == 2  # one envelope per cluster
    clusters = {}
    for envelope in await outbox(db):
        samples = envelope.payload_as(WorkloadSamples).samples
        assert {s.workload.cluster for s in samples} == {envelope.cluster_id}
        clusters[envelope.cluster_id] = len(samples)
    assert clusters == {"edge-7": 1, "edge-1": 1}


async def test_large_batches_are_cut_into_envelopes_and_a_retry_queues_nothing_new(
    client: Client, db: asyncpg.Connection
) -> None:
    body = {"samples": [sample(i) for i in range(2 * MAX_SAMPLES_PER_ENVELOPE + 500)]}
    first = await client.post("/v1/metrics/json", json=body)
    assert first.json()["envelopes"] == 3
    sizes = [len(e.payload_as(WorkloadSamples).samples) for e in await outbox(db)]
    assert sizes == [MAX_SAMPLES_PER_ENVELOPE, MAX_SAMPLES_PER_ENVELOPE, 500]
    # the same batch again (a client retrying after a timeout): the same envelope ids, skipped
    again = await client.post("/v1/metrics/json", json=body)
    assert again.status_code == 202
    assert len(await outbox(db)) == 3


async def test_bad_samples_are_reported_and_the_good_ones_published(
    client: Client, db: asyncpg.Connection
) -> None:
    before = counted("json", "rejected")
    items: list[Any] = [
        sample(0),
        sample(1, values={"cpu_cores": -1}),
        sample(2, values={"cpu_cores": "NaN"}),
        sample(3, time="2026-05-01T12:00:03"),  # no zone
        "not an object",
        sample(5, values={"CPU": 1}),
        sample(6, values={}),
        {"time": T0.isoformat(), "values": {"cpu_cores": 1}},  # no workload
        sample(8, extra=1),
        sample(9),
        # a node's clock a month ahead: analysis would drop every live sample as late after it
        sample(10, time=(datetime.now(UTC) + timedelta(days=30)).isoformat()),
        # PostgreSQL cannot store it: analysis would dead-letter the envelope, good samples too
        sample(11, workload={"namespace": "sh\x00op", "pod": "cart-1"}),
    ]
    response = await client.post("/v1/metrics/json", json={"samples": items})
    assert response.status_code == 202
    result = response.json()
    assert (result["received"], result["accepted"], result["published"]) == (12, 2, 2)
    assert result["rejected_total"] == 10
    reasons = {r["index"]: r["reason"] for r in result["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert "not a finite, non-negative number" in reasons[1]
    assert "nan" in reasons[2]
    assert reasons[3].startswith("time:")
    assert "must be an object" in reasons[4]
    assert "must match" in reasons[5]
    assert reasons[7].startswith("workload:")
    assert reasons[8].startswith("extra:")
    assert reasons[10].startswith("time is 259")  # 2,592,000 s (30 days), less the request's time
    assert reasons[10].endswith(" s ahead of this server's clock (at most 300 s; is the node's clock set?)")
    assert reasons[11] == f"workload.namespace {NUL_REASON}"
    assert counted("json", "rejected") == before + 10
    [envelope] = await outbox(db)
    assert len(envelope.payload_as(WorkloadSamples).samples) == 2


async def test_a_batch_with_nothing_usable_is_refused_whole(client: Client, db: asyncpg.Connection) -> None:
    response = await client.post("/v1/metrics/json", json={"samples": [sample(values={"cpu_cores": -2})]})
    assert response.status_code == 422
    problem = response.json()
    assert (problem["reason"], problem["rejected"]) == ("no_valid_items", 1)
    assert problem["rejections"][0]["index"] == 0
    assert await outbox(db) == []


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"samples": []}', 400, "empty_batch"),
        (b"[]", 422, "invalid_body"),
        (b'{"samples": {}}', 422, "invalid_body"),
        (b'{"sample": [1]}', 422, "invalid_body"),
        (b'{"samples": [], "extra": 1}', 422, "invalid_body"),
        (b'{"samples": [{"values": {"cpu_cores": NaN}}]}', 400, "invalid_json"),
        (b'{"samples": [{"values": {"cpu_cores": 1e999}}]}', 400, "invalid_json"),
    ],
)
async def test_unusable_bodies_are_refused_with_a_reason(
    client: Client, db: asyncpg.Connection, body: bytes, status: int, reason: str
) -> None:
    response = await client.post(
        "/v1/metrics/json", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
    assert await outbox(db) == []


async def test_limits_media_type_and_unknown_sources(client: Client, db: asyncpg.Connection) -> None:
    tiny = {"time": T0.isoformat(), "workload": {}, "values": {"cpu_cores": 1}}
    too_many = await client.post("/v1/metrics/json", json={"samples": [tiny] * 50_001})
    assert (too_many.status_code, too_many.json()["reason"]) == (413, "too_many_items")
    protobuf = await client.post(
        "/v1/metrics/prometheus", content=b"\x00", headers={"Content-Type": "application/x-protobuf"}
    )
    assert (protobuf.status_code, protobuf.json()["reason"]) == (415, "unsupported_media_type")
    unknown = await client.post("/v1/metrics/statsd", json={"samples": [tiny]})
    assert unknown.status_code == 404
    assert unknown.json()["known_sources"] == ["json", "prometheus"]
    assert await outbox(db) == []


@pytest.mark.parametrize(("max_future_s", "rejected"), [(None, 1), (7200.0, 0)])
async def test_samples_stamped_ahead_of_the_clock_are_refused_by_the_configured_bound(
    make_client: MakeClient, db: asyncpg.Connection, max_future_s: float | None, rejected: int
) -> None:
    """A sample an hour ahead is refused per item (the default bound, 300 s) unless
    ``QCDR_EVENTS_MAX_FUTURE_S`` allows it, as for events; both sources."""
    now = datetime.now(UTC)
    ahead = now + timedelta(hours=1)
    json_body = {"samples": [sample(time=now.isoformat()), sample(time=ahead.isoformat())]}
    stamps = [int(t.timestamp() * 1000) for t in (now, ahead)]
    prometheus_body = {
        "timeseries": [
            {
                "labels": [{"name": "__name__", "value": "memory_bytes"}, {"name": "pod", "value": "cart-1"}],
                "samples": [{"value": 1.0, "timestamp": stamp} for stamp in stamps],
            }
        ]
    }
    overrides = {} if max_future_s is None else {"events_max_future_s": max_future_s}
    async with make_client(**overrides) as (client, _):
        for source, body, where in (("json", json_body, (1, None)), ("prometheus", prometheus_body, (0, 1))):
            response = await client.post(f"/v1/metrics/{source}", json=body)
            assert response.status_code == 202, response.text
            result = response.json()
            assert (result["published"], result["rejected_total"]) == (2 - rejected, rejected), result
            if rejected:
                [refused] = result["rejected"]
                assert (refused["index"], refused["sample"]) == where
                assert "s ahead of this server's clock (at most 300 s" in refused["reason"]


async def test_a_nul_character_costs_its_series_and_in_cluster_the_request(
    client: Client, db: asyncpg.Connection
) -> None:
    body = {
        "timeseries": [
            series("memory_bytes", [(0, 1.0)], namespace="sh\x00op"),
            series("memory_bytes", [(0, 2.0)]),
        ]
    }
    response = await client.post("/v1/metrics/prometheus", json=body)
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["published"], result["rejected_total"]) == (1, 1)
    assert result["rejected"] == [{"index": 0, "sample": None, "reason": f"workload.namespace {NUL_REASON}"}]
    # the cluster of every sample naming none: refused whole, before the body is read
    refused = await client.post(
        "/v1/metrics/json", params={"cluster": "edge\x00"}, json={"samples": [sample()]}
    )
    assert (refused.status_code, refused.json()["reason"]) == (422, "validation_error")
    assert refused.json()["detail"] == f"query.cluster: {NUL_REASON}"
    assert len(await outbox(db)) == 1


async def test_the_byte_limit(make_client: MakeClient, db: asyncpg.Connection) -> None:
    async with make_client(events_max_bytes=1024) as (client, _):
        response = await client.post("/v1/metrics/json", json={"samples": [sample(i) for i in range(20)]})
    assert (response.status_code, response.json()["reason"]) == (413, "content_too_large")


async def test_the_rate_limit(make_client: MakeClient, db: asyncpg.Connection) -> None:
    settings = {"events_max_items": 10, "events_rate_burst": 10, "events_rate_per_s": 0.01}
    async with make_client(**settings) as (client, _):
        body = {"samples": [sample(i) for i in range(10)]}
        assert (await client.post("/v1/metrics/json", json=body)).status_code == 202
        limited = await client.post("/v1/metrics/json", json=body)
        assert (limited.status_code, limited.json()["reason"]) == (429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        # samples have buckets of their own: events of the same token still pass
        assert (await client.post("/v1/events/falco", json=[])).status_code != 429
    assert len(await outbox(db)) == 1


async def test_tokens_and_scopes(make_client: MakeClient, db: asyncpg.Connection) -> None:
    body = {"samples": [sample()]}
    async with make_client(token=None) as (anonymous, _):
        assert (await anonymous.post("/v1/metrics/json", json=body)).status_code == 401
        assert (await anonymous.post("/v1/metrics/nowhere", json=body)).status_code == 401
    async with make_client(token=READ_TOKEN) as (reader, _):
        refused = await reader.post("/v1/metrics/prometheus", json=body)
        assert refused.status_code == 403
        assert refused.json()["required_scope"] == "write"
    assert await outbox(db) == []


async def test_prometheus_series_are_mapped_rated_and_merged(
    client: Client, db: asyncpg.Connection, relay: OutboxRelay, redis_client: Redis, redis_prefix: str
) -> None:
    owner = {
        "workload": "cart",
        "workload_type": "deployment",
        "image_id": f"docker-pullable://r/cart@{DIGEST}",
    }
    body = {
        "timeseries": [
            series("container_memory_working_set_bytes", [(0, 1000.0), (30, 2000.0)], **owner),
            # a counter: rates between consecutive samples, the first one ignored
            series("container_cpu_usage_seconds_total", [(0, 10.0), (30, 16.0)], **owner),
            # the pod's cgroup total (no container) would count the containers twice
            series("container_cpu_usage_seconds_total", [(0, 10.0), (30, 20.0)], container=""),
            # a recording rule is already a rate; its workload has no owner labels
            series(
                "namespace_pod_container:container_cpu_usage_seconds_total:sum_irate",
                [(0, 0.5)],
                pod="other-1",
            ),
            series("container_fs_reads_total", [(0, 1.0), (30, 2.0)]),  # not ours: ignored
            series("memory_bytes", [(60, "NaN"), (60, -1.0)]),  # a stale marker, a negative value
            series("node_load1", [(0, 1.0)], namespace="", pod="", container=""),
        ]
    }
    before = counted("prometheus", "ignored")
    response = await client.post("/v1/metrics/prometheus", json=body, params={"cluster": "edge-7"})
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["received"] == 12
    assert (result["accepted"], result["ignored"], result["rejected_total"]) == (4, 6, 2)
    assert [(r["index"], r["sample"]) for r in result["rejected"]] == [(5, 0), (5, 1)]
    assert "not finite" in result["rejected"][0]["reason"]
    assert "negative" in result["rejected"][1]["reason"]
    assert counted("prometheus", "ignored") == before + 6

    await relay.publish_pending()
    [envelope] = await published(redis_client, redis_prefix)
    assert envelope.cluster_id == "edge-7"
    samples = envelope.payload_as(WorkloadSamples).samples
    by_key = {(s.workload.pod, s.time): s for s in samples}
    assert len(samples) == 3
    at_30 = by_key[("cart-1", T0 + timedelta(seconds=30))]
    assert at_30.values == {"memory_bytes": 2000.0, "cpu_cores": 0.2}  # (16 - 10) s / 30 s
    assert by_key[("cart-1", T0)].values == {"memory_bytes": 1000.0}
    cart = at_30.workload
    assert (cart.cluster, cart.namespace, cart.container) == ("edge-7", "shop", "app")
    assert (cart.owner_kind, cart.owner_name, cart.image_digest) == ("Deployment", "cart", DIGEST)
    assert by_key[("other-1", T0)].values == {"cpu_cores": 0.5}


async def test_prometheus_batches_of_only_unknown_series_are_accepted(
    client: Client, db: asyncpg.Connection
) -> None:
    # a remote-write sender posts whatever it scrapes: a refusal would make it retry forever
    body = {"timeseries": [series("up", [(0, 1.0)]), series("container_cpu_usage_seconds_total", [(0, 3.0)])]}
    response = await client.post("/v1/metrics/prometheus", json=body)
    assert response.status_code == 202
    assert (response.json()["accepted"], response.json()["ignored"], response.json()["envelopes"]) == (
        0,
        2,
        0,
    )
    assert await outbox(db) == []


async def test_the_relay_in_the_app_publishes_samples_promptly(
    make_client: MakeClient, redis_client: Redis, redis_prefix: str
) -> None:
    async with make_client(background_workers=True) as (client, _):
        response = await client.post("/v1/metrics/json", json={"samples": [sample(i) for i in range(3)]})
        assert response.status_code == 202

        async def arrived() -> bool:
            return bool(await redis_client.xlen(stream_key(redis_prefix, "ingest:samples")) == 1)

        await eventually(arrived)


def test_the_request_body_is_documented() -> None:
    from qcdr_ingest.app import create_app
    from qcdr_ingest.settings import IngestSettings

    spec = create_app(IngestSettings(gc_tuning=False, background_workers=False)).openapi()
    operation = spec["paths"]["/v1/metrics/{source}"]["post"]
    assert operation["summary"].startswith("Send workload resource samples")
    assert "container_cpu_usage_seconds_total" in operation["description"]
    shapes = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [s["required"] for s in shapes] == [["samples"], ["timeseries"]]
    assert orjson.dumps(spec)  # plain JSON throughout
