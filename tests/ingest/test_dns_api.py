"""The verdict API on the real app (Postgres-backed feed copies), and DNS events through the
existing ``POST /v1/events/{source}`` path."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from qcdr_ingest.intel.model import StoredFeed
from qcdr_ingest.intel.state_postgres import PostgresFeedStateStore

from tests.ingest.service import conftest as service_fixtures
from tests.ingest.service.conftest import READ_TOKEN, MakeClient

ingest_database_url = service_fixtures.ingest_database_url
db = service_fixtures.db
make_ingest_settings = service_fixtures.make_ingest_settings
make_client = service_fixtures.make_client

pytestmark = [pytest.mark.db, pytest.mark.redis]

FEEDS_YAML = """
- {name: test-mining, url: "file:mining.txt", category: mining, format: domains}
- {name: test-hosts, url: "file:hosts.txt", category: adware, format: hosts}
- {name: test-ips, url: "file:ips.txt", category: c2}
"""
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


async def _store(app: object, name: str, body: bytes) -> None:
    store = PostgresFeedStateStore(app.state.session_factory)  # type: ignore[attr-defined]
    await store.save(
        StoredFeed(name=name, url=f"file:///{name}", body=body, fetched_at=NOW, attempted_at=NOW)
    )


@pytest.fixture
def feeds_file(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(FEEDS_YAML)
    return path


async def test_verdicts(make_client: MakeClient, feeds_file: Path, db: asyncpg.Connection) -> None:
    async with make_client(intel_feeds_file=feeds_file) as (client, app):
        await _store(app, "test-mining", b"# pools\npool.minexmr.com\n198.51.100.1:3333\n")
        await _store(app, "test-hosts", b"0.0.0.0 ads.example.net\n")
        hit = await client.post("/v1/dns/verdict", json={"name": "EU.Pool.MineXMR.com."})
        assert hit.status_code == 200, hit.text
        assert hit.json() == {
            "name": "eu.pool.minexmr.com",
            "blocked": True,
            "reason": "under listed pool.minexmr.com by test-mining",
            "threat": "mining",
            "registered_domain": "minexmr.com",
            "listed": "pool.minexmr.com",
            "feeds": ["test-mining"],
            "dga_score": None,
        }
        ads = await client.get("/v1/dns/verdict", params={"name": "ads.example.net"})
        assert (ads.json()["blocked"], ads.json()["threat"]) == (True, "adware")
        clean = await client.post("/v1/dns/verdict", json={"name": "www.example.org"})
        assert (clean.json()["blocked"], clean.json()["threat"]) == (False, None)


async def test_verdict_refusals(make_client: MakeClient, feeds_file: Path, db: asyncpg.Connection) -> None:
    async with make_client(intel_feeds_file=feeds_file) as (client, _):
        bad = await client.post("/v1/dns/verdict", json={"name": "1.2.3.4"})
        assert (bad.status_code, bad.json()["reason"]) == (422, "invalid_name")
        assert (await client.post("/v1/dns/verdict", json={"name": "a..b"})).status_code == 422
        assert (await client.post("/v1/dns/verdict", json={})).status_code == 422
        assert (
            await client.post("/v1/dns/verdict", json={"name": "x.example", "extra": 1})
        ).status_code == 422
        assert (await client.post("/v1/dns/verdict", json={"name": "x" * 301})).status_code == 422
        assert (await client.get("/v1/dns/verdict")).status_code == 422
    async with make_client(token=None, intel_feeds_file=feeds_file) as (anonymous, _):
        refused = await anonymous.post("/v1/dns/verdict", json={"name": "x.example"})
        assert refused.status_code == 401
        assert (await anonymous.get("/v1/dns/verdict", params={"name": "x.example"})).status_code == 401
    async with make_client(token=READ_TOKEN, intel_feeds_file=feeds_file) as (reader, _):
        # read scope: both the GET and the POST answer (the verdict is a question, not a write)
        assert (await reader.get("/v1/dns/verdict", params={"name": "x.example"})).status_code == 200
        assert (await reader.post("/v1/dns/verdict", json={"name": "x.example"})).status_code == 200


async def test_dns_queries_go_through_the_events_path(
    make_client: MakeClient, db: asyncpg.Connection
) -> None:
    async with make_client() as (client, _):
        items = [
            {
                "time": "2026-05-01T12:00:00Z",
                "query": "pool.minexmr.com.",
                "rcode": "NOERROR",
                "workload": {"namespace": "shop", "pod": "cart-1"},
            },
            {"time": "2026-05-01T12:00:01Z", "query": "not a name"},
        ]
        answer = await client.post("/v1/events/dns", json=items)
        assert answer.status_code == 202, answer.text
        assert (answer.json()["stored"], answer.json()["rejected"]) == (1, 1)
        stored = await client.get("/v1/events", params={"category": "dns_query"})
        (event,) = stored.json()["items"]
        assert (event["source"], event["network"]["domain"]) == ("dns", "pool.minexmr.com")
        sources = {s["name"] for s in (await client.get("/v1/sources")).json()}
        assert {"dns", "hubble"} <= sources
        # POST /v1/dns is the same path under the name: NDJSON batch, same idempotency
        ndjson = b'{"id": "q-2", "time": "2026-05-01T12:00:02Z", "query": "xmr.example.net"}\nnot json\n'
        batch = await client.post("/v1/dns", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        assert batch.status_code == 202, batch.text
        assert (batch.json()["source"], batch.json()["stored"], batch.json()["rejected"]) == ("dns", 1, 1)
        again = await client.post("/v1/dns", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        assert (again.json()["stored"], again.json()["duplicates"]) == (0, 1)
        assert (await client.post("/v1/dns", json=[{"query": "no-time.example"}])).status_code == 422
        domains = {
            e["network"]["domain"]
            for e in (await client.get("/v1/events", params={"source": "dns"})).json()["items"]
        }
        assert domains == {"pool.minexmr.com", "xmr.example.net"}
