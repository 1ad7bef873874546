"""The service's CDR IOC blocklist leaves out what AbuseIPDB scores low, as once mode's
``--reputation-threshold`` does: ingest's answers (``intel_reputation``) and listings
(``ingest_intel_listed``) in the same database, real migrations of both services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.testing.wait import eventually_async
from qcdr_response.lifecycle.ioc_refresh import IocRefresher
from qcdr_response.lifecycle.models import PolicyRow, PolicyVersionRow
from qcdr_response.lifecycle.service import BatchOutcome
from qcdr_response.worker import ResponseWorker, make_lifecycle
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.feed_pipelines import migrated_database, run_sql
from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

BAD, LOW, LOW_LISTED, WHITELISTED, UNCHECKED = (
    "185.220.101.7",
    "45.155.205.1",
    "45.155.205.2",
    "8.8.4.4",
    "45.155.205.9",
)


@pytest.fixture(scope="module")
def database_url(base_database_url: str) -> Iterator[str]:
    with migrated_database(base_database_url, "qcdr_response_rep") as url:
        yield url


@pytest.fixture(autouse=True)
async def empty_tables(database_url: str) -> AsyncIterator[None]:
    """Each test starts without findings, policies, answers or listings (the module shares one
    migrated database)."""
    await run_sql(database_url, "TRUNCATE response_findings, response_received, response_policies CASCADE")
    yield
    await run_sql(database_url, "TRUNCATE intel_reputation, intel_indicators")


def c2(ip: str) -> Any:
    return make_finding(
        category="Reverse_Shell",
        techniques=["T1059.004"],
        process={"name": "bash", "path": "/bin/bash"},
        network={"ip": ip, "port": 4444},
    )


async def current_blocklist(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, set[str]]:
    """(current version, addresses) of ``qualys-cdr-blocklist``."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(PolicyVersionRow.version, PolicyVersionRow.body)
                .join(PolicyRow, PolicyRow.id == PolicyVersionRow.policy_id)
                .where(
                    PolicyRow.name == "qualys-cdr-blocklist",
                    PolicyVersionRow.version == PolicyRow.current_version,
                )
            )
        ).one()
    rules = row.body["spec"]["egressDeny"]
    return row.version, {c["cidr"].split("/")[0] for rule in rules for c in rule.get("toCIDRSet", [])}


async def blocked(database_url: str, threshold: int) -> set[str]:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        lc = make_lifecycle(response_settings(ioc_reputation_threshold=threshold))
        async with sessions.begin() as session:
            await handle_envelopes(
                session,
                [finding_envelope(c2(ip)) for ip in (BAD, LOW, LOW_LISTED, WHITELISTED, UNCHECKED)],
                lc,
            )
        return (await current_blocklist(sessions))[1]
    finally:
        await engine.dispose()


async def test_low_scores_are_left_out_unless_a_feed_lists_them(database_url: str) -> None:
    await run_sql(
        database_url,
        "INSERT INTO intel_reputation (ip, score, total_reports, is_whitelisted, checked_at) "
        "VALUES ($1::inet, $2, 0, $3, now())",
        (BAD, 90, False),
        (LOW, 5, False),
        (LOW_LISTED, 5, False),
        (WHITELISTED, 100, True),
    )
    await run_sql(
        database_url,
        "INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES ($1::cidr, $2, 1)",
        (f"{LOW_LISTED}/32", ["feodo"]),
    )
    # checked and bad, listed by a feed whatever its score, and not checked yet: blocked
    assert await blocked(database_url, 50) == {BAD, LOW_LISTED, UNCHECKED}
    await run_sql(database_url, "TRUNCATE response_findings, response_received, response_policies CASCADE")
    # threshold 0: reputation is not consulted
    assert await blocked(database_url, 0) == {BAD, LOW, LOW_LISTED, WHITELISTED, UNCHECKED}


async def test_the_refresher_follows_answers_that_arrive_after_the_verdict(database_url: str) -> None:
    """An address blocked because nobody had checked it is unblocked once AbuseIPDB scores it
    clean, and blocked again when a feed lists it, without another finding; unchanged answers
    make no version, in this process or a restarted one."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    committed: list[BatchOutcome] = []

    async def after_commit(outcome: BatchOutcome) -> None:
        committed.append(outcome)

    lc = make_lifecycle(response_settings(ioc_reputation_threshold=50))
    refresher = IocRefresher(sessions, lc, 300, after_commit=after_commit)
    try:
        async with sessions.begin() as session:
            await handle_envelopes(session, [finding_envelope(c2(ip)) for ip in (BAD, UNCHECKED)], lc)
        assert await current_blocklist(sessions) == (1, {BAD, UNCHECKED})
        # the first round regenerates (it knows nothing yet) and finds the same documents
        assert await refresher.refresh() == "unchanged"
        assert await refresher.refresh() == "unchanged"

        await run_sql(
            database_url,
            "INSERT INTO intel_reputation (ip, score, total_reports, is_whitelisted, checked_at) "
            "VALUES ($1::inet, $2, 0, false, now())",
            (UNCHECKED, 3),
            (BAD, 95),
        )
        assert await refresher.refresh() == "changed"
        assert await current_blocklist(sessions) == (2, {BAD})
        assert len(committed) == 1
        assert committed[0].outbox_rows >= 1  # policy_changed for the relay
        assert await refresher.refresh() == "unchanged"

        await run_sql(
            database_url,
            "INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES ($1::cidr, $2, 1)",
            (f"{UNCHECKED}/32", ["feodo"]),
        )
        assert await refresher.refresh() == "changed"
        assert await current_blocklist(sessions) == (3, {BAD, UNCHECKED})

        # a restarted replica regenerates once and makes no version
        again = IocRefresher(sessions, lc, 300)
        assert await again.refresh() == "unchanged"
        assert await current_blocklist(sessions) == (3, {BAD, UNCHECKED})
    finally:
        await engine.dispose()


async def test_a_blocklist_left_with_nothing_to_deny_keeps_its_version_and_says_so(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    lc = make_lifecycle(response_settings(ioc_reputation_threshold=50))
    https = make_finding(
        category="Reverse_Shell",
        techniques=["T1059.004"],
        process={"name": "bash", "path": "/bin/bash"},
        network={"ip": UNCHECKED, "port": 443},  # not a suspicious port: the address is all it blocks
    )
    try:
        async with sessions.begin() as session:
            await handle_envelopes(session, [finding_envelope(https)], lc)
        assert await current_blocklist(sessions) == (1, {UNCHECKED})
        await run_sql(
            database_url,
            "INSERT INTO intel_reputation (ip, score, total_reports, is_whitelisted, checked_at) "
            "VALUES ($1::inet, 0, 0, false, now())",
            (UNCHECKED,),
        )
        refresher = IocRefresher(sessions, lc, 300)
        assert await refresher.refresh() == "stale"
        assert await current_blocklist(sessions) == (1, {UNCHECKED})
        assert await refresher.refresh() == "unchanged"  # said once, not every round
    finally:
        await engine.dispose()


@pytest.mark.redis
async def test_the_worker_refreshes_and_rewrites_the_policy_files(
    database_url: str, redis_url: str, redis_prefix: str, redis_client: Redis, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    settings = response_settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        output_dir=tmp_path,
        ioc_refresh_s=0.2,
    )
    assert ResponseWorker(settings, engine, redis_client).ioc_refresher is not None
    off = settings.model_copy(update={"ioc_refresh_s": 0})
    assert ResponseWorker(off, engine, redis_client).ioc_refresher is None
    worker = ResponseWorker(settings, engine, redis_client)
    lc = worker.lifecycle
    cnp = tmp_path / "qualys-cdr-blocklist.yaml"

    def text() -> str:
        return cnp.read_text() if cnp.exists() else ""

    async def file_has(ip: str) -> bool:
        return ip in text()

    async def file_lacks(ip: str) -> bool:
        return ip not in text()

    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        async with sessions.begin() as session:
            await handle_envelopes(session, [finding_envelope(c2(ip)) for ip in (BAD, UNCHECKED)], lc)
        task = asyncio.create_task(worker.run(stop))
        await eventually_async(lambda: file_has(UNCHECKED), 10, what="the file")
        await run_sql(
            database_url,
            "INSERT INTO intel_reputation (ip, score, total_reports, is_whitelisted, checked_at) "
            "VALUES ($1::inet, 1, 0, false, now())",
            (UNCHECKED,),
        )
        await eventually_async(lambda: file_lacks(UNCHECKED), 10, what="the refreshed file")
        assert BAD in text()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 10)
        await engine.dispose()
