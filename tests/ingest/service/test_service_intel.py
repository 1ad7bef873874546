"""The threat-intel scheduler against a local feed server: the stored set, the view other services
read, the change announcement through the outbox, and the intel routes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI, HTTPException, Request, Response
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import Envelope, OutboxRelay, stream_key
from qcdr_common.testing.asgi_server import serve_app
from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.intel.model import FeedSpec
from qcdr_ingest.intel.scheduler import IntelScheduler
from qcdr_ingest.intel.schemas import IntelChanged
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.ingest.service.conftest import READ_TOKEN, MakeClient, eventually

pytestmark = [pytest.mark.db, pytest.mark.redis]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALPHA = b"# alpha C2 list\n45.155.205.233\n91.240.118.0/24\n10.0.0.1\n"  # 10/8 is never-block
BETA = b"45.155.205.233\n185.220.101.7\n2a0b:f4c2::/32\n"


@dataclass
class FeedHost:
    """Feeds on 127.0.0.1 with ETags and 304s (the pattern of tests/ingest/intel/conftest.py)."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/feeds/{name}")
        async def feed(name: str, request: Request) -> Response:
            self.hits.append(name)
            if name not in self.bodies:
                raise HTTPException(404)
            body = self.bodies[name]
            tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if request.headers.get("if-none-match") == tag:
                return Response(status_code=304, headers={"ETag": tag})
            return Response(body, media_type="text/plain", headers={"ETag": tag})

        return app


@pytest.fixture(scope="module")
def _host() -> Iterator[FeedHost]:
    host = FeedHost()
    with serve_app(host.app(), name="ingest-feed-host") as url:
        host.url = url
        yield host


@pytest.fixture
def host(_host: FeedHost) -> FeedHost:
    _host.bodies = {"alpha": ALPHA, "beta": BETA}
    _host.hits.clear()
    return _host


def specs(host: FeedHost, *names: str) -> list[FeedSpec]:
    categories = {"alpha": "c2", "beta": "scanner"}
    return [
        FeedSpec(name=n, url=f"{host.url}/feeds/{n}", category=categories[n], min_interval=timedelta(0))
        for n in names
    ]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def engine(ingest_database_url: str) -> Any:
    engine = make_engine(ingest_database_url)
    yield engine
    await engine.dispose()


def scheduler(
    engine: AsyncEngine, feeds: list[FeedSpec], clock: Clock, ttl: timedelta = timedelta(hours=1)
) -> IntelScheduler:
    return IntelScheduler(
        engine,
        make_session_factory(engine),
        feeds,
        interval=timedelta(minutes=15),
        ttl=ttl,
        never_block=("100.64.0.0/10",),
        cluster_id="prod",
        clock=clock,
    )


async def listed(db: asyncpg.Connection, ip: str) -> list[tuple[list[str], int]]:
    rows = await db.fetch(
        "SELECT feeds, confidence FROM ingest_intel_listed"
        " WHERE cidr >>= $1::inet ORDER BY masklen(cidr) DESC",
        ip,
    )
    return [(list(r["feeds"]), r["confidence"]) for r in rows]


async def changes(db: asyncpg.Connection) -> list[IntelChanged]:
    rows = await db.fetch("SELECT data FROM ingest_outbox WHERE stream = 'ingest:intel' ORDER BY id")
    envelopes = [Envelope.from_json(bytes(r["data"])) for r in rows]
    assert all(e.type == "ingest.intel_changed" for e in envelopes)
    return [e.payload_as(IntelChanged) for e in envelopes]


async def test_the_view_has_the_promised_columns(db: asyncpg.Connection) -> None:
    rows = await db.fetch(
        "SELECT column_name, udt_name FROM information_schema.columns"
        " WHERE table_name = 'ingest_intel_listed' ORDER BY ordinal_position"
    )
    assert [(r["column_name"], r["udt_name"]) for r in rows] == [
        ("cidr", "cidr"),
        ("feeds", "_text"),
        ("confidence", "int4"),
    ]


async def test_refresh_stores_the_set_and_announces_changes_only(
    db: asyncpg.Connection, engine: AsyncEngine, host: FeedHost, redis_client: Redis, redis_prefix: str
) -> None:
    clock = Clock()
    intel = scheduler(engine, specs(host, "alpha", "beta"), clock)
    first = await intel.refresh()
    assert first.changed
    assert await listed(db, "45.155.205.233") == [(["alpha", "beta"], 2)]
    assert await listed(db, "91.240.118.77") == [(["alpha"], 1)]
    assert await listed(db, "2a0b:f4c2:1::9") == [(["beta"], 1)]
    assert await listed(db, "10.0.0.1") == []  # never-block
    assert await listed(db, "8.8.8.8") == []
    (announced,) = await changes(db)
    assert (announced.cidrs, announced.added, announced.removed) == (first.cidrs, first.cidrs, 0)
    assert {f.name: f.status for f in announced.feeds} == {"alpha": "fresh", "beta": "fresh"}

    # nothing changed (304s): no second announcement
    clock.now += timedelta(minutes=15)
    second = await intel.refresh()
    assert not second.changed
    assert {f.status for f in second.feeds} == {"not-modified"}
    assert len(await changes(db)) == 1

    # beta drops an address: still listed for the TTL (feeds flap), gone after it
    host.bodies["beta"] = b"45.155.205.233\n2a0b:f4c2::/32\n"
    clock.now += timedelta(minutes=15)
    assert not (await intel.refresh()).changed
    assert await listed(db, "185.220.101.7") == [(["beta"], 1)]
    clock.now += timedelta(hours=2)
    expired = await intel.refresh()
    assert expired.changed
    assert expired.removed == 1
    assert await listed(db, "185.220.101.7") == []
    assert len(await changes(db)) == 2

    relay = OutboxRelay(engine, redis_client, OUTBOX, prefix=redis_prefix, maxlen=10_000)
    assert await relay.publish_pending() == 2
    entries = await redis_client.xrange(stream_key(redis_prefix, "ingest:intel"))
    assert [Envelope.from_fields(f).payload_as(IntelChanged).removed for _, f in entries] == [0, 1]


async def test_a_feed_removed_from_the_configuration_goes_at_once(
    db: asyncpg.Connection, engine: AsyncEngine, host: FeedHost
) -> None:
    clock = Clock()
    await scheduler(engine, specs(host, "alpha", "beta"), clock).refresh()
    clock.now += timedelta(minutes=1)
    result = await scheduler(engine, specs(host, "alpha"), clock).refresh()
    assert result.changed
    assert await listed(db, "45.155.205.233") == [(["alpha"], 1)]
    assert await listed(db, "185.220.101.7") == []


async def test_a_failing_feed_keeps_its_last_copy(
    db: asyncpg.Connection, engine: AsyncEngine, host: FeedHost
) -> None:
    clock = Clock()
    await scheduler(engine, specs(host, "alpha", "beta"), clock).refresh()
    del host.bodies["beta"]  # now a 404
    clock.now += timedelta(minutes=5)
    result = await scheduler(engine, specs(host, "alpha", "beta"), clock).refresh()
    assert {f.name: f.status for f in result.feeds} == {"alpha": "not-modified", "beta": "stale"}
    assert not result.changed
    assert await listed(db, "185.220.101.7") == [(["beta"], 1)]


async def test_a_round_another_replica_refreshed_is_skipped(
    db: asyncpg.Connection, engine: AsyncEngine, host: FeedHost
) -> None:
    """Every replica runs the loop; a round is refreshed once, whichever replica comes first."""
    clock = Clock()
    within = timedelta(minutes=13)
    assert not (await scheduler(engine, specs(host, "alpha", "beta"), clock).refresh()).skipped
    fetched = len(host.hits)
    other = scheduler(engine, specs(host, "alpha", "beta"), clock)
    clock.now += timedelta(minutes=12)
    assert (await other.refresh(unless_refreshed_within=within)).skipped
    assert len(host.hits) == fetched
    # a replica configured with another feed set does not wait for the next round
    assert not (
        await scheduler(engine, specs(host, "alpha"), clock).refresh(unless_refreshed_within=within)
    ).skipped
    fetched = len(host.hits)
    clock.now += timedelta(minutes=14)
    assert not (
        await scheduler(engine, specs(host, "alpha"), clock).refresh(unless_refreshed_within=within)
    ).skipped
    assert len(host.hits) > fetched


async def test_intel_routes(
    make_client: MakeClient, engine: AsyncEngine, host: FeedHost, db: asyncpg.Connection
) -> None:
    async with make_client(token=READ_TOKEN) as (client, _):
        empty = (await client.get("/v1/intel/feeds")).json()
        assert (empty["refreshed_at"], empty["feeds"]) == (None, [])
        await scheduler(engine, specs(host, "alpha", "beta"), Clock()).refresh()
        feeds = (await client.get("/v1/intel/feeds")).json()
        assert feeds["cidrs"] > 0
        assert feeds["content_hash"]
        by_name = {f["name"]: f for f in feeds["feeds"]}
        assert by_name["alpha"]["status"] == "fresh"
        assert by_name["alpha"]["ips"] == 2  # 10.0.0.1 parses, but is never listed
        assert by_name["beta"]["age_s"] > 0
        assert by_name["alpha"]["url"].startswith("http://127.0.0.1:")

        hit = (await client.get("/v1/intel/lookup/45.155.205.233")).json()
        assert hit["listed"]
        assert hit["matches"] == [{"cidr": "45.155.205.233/32", "feeds": ["alpha", "beta"], "confidence": 2}]
        mapped = (await client.get("/v1/intel/lookup/::ffff:91.240.118.9")).json()
        assert (mapped["ip"], mapped["matches"][0]["cidr"]) == ("91.240.118.9", "91.240.118.0/24")
        miss = (await client.get("/v1/intel/lookup/8.8.8.8")).json()
        assert (miss["listed"], miss["matches"], miss["reputation"]) == (False, [], None)
        bad = await client.get("/v1/intel/lookup/not-an-ip")
        assert bad.status_code == 422
        assert bad.json()["reason"] == "invalid_ip"
    await db.execute(
        "INSERT INTO intel_reputation (ip, score, total_reports, checked_at) VALUES ('8.8.4.4', 3, 1, now())"
    )
    async with make_client(token=READ_TOKEN) as (client, _):
        rep = (await client.get("/v1/intel/lookup/8.8.4.4")).json()
        assert rep["reputation"]["score"] == 3


async def test_the_app_runs_the_scheduler_when_enabled(
    make_client: MakeClient, host: FeedHost, db: asyncpg.Connection, tmp_path: Any
) -> None:
    feeds_file = tmp_path / "feeds.yaml"
    feeds_file.write_text(
        f"- name: alpha\n  url: {host.url}/feeds/alpha\n  category: c2\n  min_interval: 0\n", encoding="utf-8"
    )
    async with make_client(background_workers=True, intel_enabled=True, intel_feeds_file=feeds_file) as (
        _,
        app,
    ):
        assert app.state.workers.scheduler is not None

        async def refreshed() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM intel_indicator_state") == 1)

        await eventually(refreshed)
    assert await listed(db, "45.155.205.233") == [(["alpha"], 1)]


async def domains(db: asyncpg.Connection) -> dict[str, tuple[list[str], list[str]]]:
    rows = await db.fetch("SELECT domain, feeds, categories FROM ingest_intel_domains ORDER BY domain")
    return {r["domain"]: (list(r["feeds"]), list(r["categories"])) for r in rows}


async def test_domain_feeds_fill_the_domain_view(
    db: asyncpg.Connection, engine: AsyncEngine, host: FeedHost
) -> None:
    from qcdr_ingest.intel.model import FeedFormat

    host.bodies["bad-domains"] = b"# a domain list\nEvil.Example.\nc2.test\n"
    host.bodies["hosts"] = b"0.0.0.0 tracker.test\n0.0.0.0 c2.test\n127.0.0.1 localhost\n"
    feeds = [
        *specs(host, "alpha"),
        FeedSpec(
            name="bad-domains",
            url=f"{host.url}/feeds/bad-domains",
            category="c2",
            format=FeedFormat.DOMAINS,
            min_interval=timedelta(0),
        ),
        FeedSpec(
            name="hosts",
            url=f"{host.url}/feeds/hosts",
            category="ads",
            format=FeedFormat.HOSTS,
            min_interval=timedelta(0),
        ),
    ]
    clock = Clock()
    intel = scheduler(engine, feeds, clock)
    await intel.refresh()
    assert await domains(db) == {
        "c2.test": (["bad-domains", "hosts"], ["ads", "c2"]),
        "evil.example": (["bad-domains"], ["c2"]),
        "tracker.test": (["hosts"], ["ads"]),
    }
    host.bodies["hosts"] = b"0.0.0.0 tracker.test\n"
    clock.now += timedelta(minutes=15)
    await intel.refresh()
    assert (await domains(db))["c2.test"] == (["bad-domains"], ["c2"])
