"""AbuseIPDB reputation in the services: event storage queues the public destinations, the worker
checks them against the local AbuseIPDB double and fills ``intel_reputation`` (what analysis's
``intel_match`` reads); fresh answers are not queued again, failures stay queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_ingest.intel.abuseipdb import ReputationChecker
from qcdr_ingest.intel.abuseipdb_double import Fault
from qcdr_ingest.intel.reputation_queue import ReputationWorker
from qcdr_ingest.intel.state_postgres import PostgresReputationCache
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.ingest.events.factories import hubble_flow
from tests.ingest.intel.test_abuseipdb import ANSWERS, BAD, CLEAN, EDGE, make_settings, served
from tests.ingest.service.conftest import MakeClient

pytestmark = pytest.mark.db

PRIVATE = "10.0.0.21"


def flow(destination: str, port: int = 60524) -> dict[str, Any]:
    item = hubble_flow(IP={"source": "10.0.1.235", "destination": destination, "ipVersion": "IPv4"})
    item["flow"]["l4"]["TCP"]["source_port"] = port
    item["flow"]["destination"] = {"identity": 2, "labels": ["reserved:world"]}
    return item


@pytest.fixture
async def sessions(ingest_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(ingest_database_url)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def queued(db: asyncpg.Connection) -> set[str]:
    return {r["ip"] for r in await db.fetch("SELECT host(ip) AS ip FROM intel_reputation_queue")}


async def test_destinations_are_queued_checked_and_stored(
    make_client: MakeClient, db: asyncpg.Connection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with served(answers=ANSWERS) as (double, url):
        abuseipdb = make_settings(url)
        async with make_client(abuseipdb=abuseipdb) as (client, _):
            body = [flow(BAD), flow(CLEAN), flow(PRIVATE), flow(BAD, port=60525)]
            response = await client.post("/v1/events/hubble", json=body)
            assert response.status_code == 202, response.text
            assert response.json()["stored"] == 4
            # public destinations only, once each
            assert await queued(db) == {BAD, CLEAN}

            worker = ReputationWorker(
                sessions, ReputationChecker(abuseipdb, PostgresReputationCache(sessions))
            )
            assert await worker.cycle() == 2
            scores = {
                r["ip"]: r["score"]
                for r in await db.fetch("SELECT host(ip) AS ip, score FROM intel_reputation")
            }
            assert scores == {BAD: 90, CLEAN: 0}
            assert await queued(db) == set()
            assert double.stats.check_requests == 2

            # a fresh answer: more connections to BAD queue nothing, and nothing is asked again
            response = await client.post("/v1/events/hubble", json=[flow(BAD, port=60600)])
            assert response.json()["stored"] == 1
            assert await queued(db) == set()
            assert await worker.cycle() == 0
            assert double.stats.check_requests == 2


async def test_a_failed_check_stays_queued_and_no_key_queues_nothing(
    make_client: MakeClient, db: asyncpg.Connection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with served(answers=ANSWERS, faults=[Fault(kind="500", ips=(EDGE,))]) as (_, url):
        abuseipdb = make_settings(url)
        async with make_client(abuseipdb=abuseipdb) as (client, _):
            await client.post("/v1/events/hubble", json=[flow(BAD), flow(EDGE)])
        worker = ReputationWorker(sessions, ReputationChecker(abuseipdb, PostgresReputationCache(sessions)))
        assert await worker.cycle() == 1
        assert await queued(db) == {EDGE}  # asked again next cycle

    async with make_client() as (client, app):  # no ABUSEIPDB_API_KEY
        assert app.state.reputation_fresh_s is None
        await client.post("/v1/events/hubble", json=[flow(CLEAN, port=61000)])
    assert await queued(db) == {EDGE}


async def test_the_app_runs_the_worker_when_a_key_is_set(
    make_client: MakeClient, db: asyncpg.Connection
) -> None:
    with served(answers=ANSWERS) as (_, url):
        async with make_client(abuseipdb=make_settings(url), background_workers=True) as (_, app):
            assert "abuseipdb reputation worker" in app.state.workers.describe()
        async with make_client(
            abuseipdb=make_settings(url), background_workers=True, reputation_enabled=False
        ) as (_, app):
            assert app.state.workers.reputation is None
            assert app.state.reputation_fresh_s is None


async def test_a_spent_quota_pauses_the_worker_until_it_resets(
    make_client: MakeClient, db: asyncpg.Connection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with served(answers=ANSWERS, remaining=1) as (double, url):
        abuseipdb = make_settings(url, concurrency=1)
        async with make_client(abuseipdb=abuseipdb) as (client, _):
            await client.post("/v1/events/hubble", json=[flow(BAD), flow(CLEAN)])
        worker = ReputationWorker(sessions, ReputationChecker(abuseipdb, PostgresReputationCache(sessions)))
        assert await worker.cycle() == 1  # one check left in the day
        assert len(await queued(db)) == 1  # the other waits, queued
        assert worker.quota_reset_at is not None
        assert worker._pause_s() > 0
        # the loop does not ask while paused
        requests = double.stats.check_requests
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.3)
        stop.set()
        await task
        assert double.stats.check_requests == requests
