"""Profiles in Postgres: a restart loses nothing, an API reset reloads in a running worker, a lost
race raises (and the retried batch succeeds), a failed transaction is forgotten, and the handler
path commits profiles with the findings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from qcdr_analysis.detectors import behaviour, load_detectors
from qcdr_analysis.findings.handlers import EventsHandler
from qcdr_analysis.findings.service import ANOMALIES, DetectorSet
from qcdr_analysis.profiles import service
from qcdr_analysis.profiles.store import CONTAINERS_LEARNING, CONTAINERS_READY, ProfileConflictError
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import Delivery
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.analysis.conftest import T0, event_envelope
from tests.analysis.profiles_factory import (
    HOURS,
    OTHER_DIGEST,
    PROFILE,
    WORKLOAD,
    by_category,
    detector,
    exec_event,
    file_event,
)
from tests.analysis.test_migrations import inspect_db

pytestmark = pytest.mark.db

PROFILE_TABLES = ("analysis_profiles", "analysis_profile_workloads")
READY = T0 + 48 * HOURS
Sessions = async_sessionmaker[AsyncSession]


async def empty_profile_tables(database_url: str) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(f"TRUNCATE {', '.join(PROFILE_TABLES)}")
    finally:
        await connection.close()


@pytest.fixture
async def sessions(db: str) -> AsyncIterator[Sessions]:
    """Sessions on the migrated database, its profile tables empty before and after (other
    tests' detectors write profiles too; ``db`` empties only the findings tables)."""
    await empty_profile_tables(db)
    engine = make_engine(db)
    yield make_session_factory(engine)
    await engine.dispose()
    await empty_profile_tables(db)


async def batch(sessions: Sessions, state: behaviour.State, *events: SecurityEvent) -> list[Finding]:
    """One batch as the dispatcher runs it: lookup, detect, persist in one transaction; discard
    when it does not commit."""
    try:
        async with sessions() as session, session.begin():
            await behaviour.lookup(session, events, state)
            findings = behaviour.detect(events, state)
            await behaviour.persist(session, state)
    except BaseException:
        behaviour.discard(state)
        raise
    return findings


async def learn(sessions: Sessions, state: behaviour.State) -> None:
    for h in range(48):
        at = T0 + h * HOURS
        await batch(
            sessions,
            state,
            exec_event("/usr/local/bin/python3", at, parent="/usr/local/bin/gunicorn"),
            exec_event("/usr/bin/curl", at, parent="/bin/sh"),
            file_event("/usr/local/bin/python3", "/etc/passwd", at),
        )


async def stored(sessions: Sessions, key: str = PROFILE) -> tuple[int, str]:
    async with sessions() as session:
        row = (
            await session.execute(
                text("SELECT generation, state FROM analysis_profiles WHERE key = :k"), {"k": key}
            )
        ).one()
        return int(row.generation), str(row.state)


def test_profile_tables_match_the_models(analysis_database_url: str) -> None:
    tables, differences = inspect_db(analysis_database_url)
    assert set(PROFILE_TABLES) <= tables
    assert [d for d in differences if any(t in repr(d) for t in PROFILE_TABLES)] == []


async def test_a_restart_loses_nothing(sessions: Sessions) -> None:
    first = detector(count_flush_interval="PT0S")
    await learn(sessions, first)
    raised = await batch(sessions, first, exec_event("/usr/bin/xmrig", READY))
    assert {f.category for f in raised} == {"anomaly.unknown_process", "drift.new_executable"}
    before = first.store.get(PROFILE)
    assert before is not None
    assert before.state == "ready"

    restarted = detector(count_flush_interval="PT0S")  # a new process: an empty store
    assert (
        await batch(sessions, restarted, exec_event("/usr/bin/curl", READY + HOURS, parent="/bin/sh")) == []
    )
    after = restarted.store.get(PROFILE)
    assert after is not None
    expected = before.to_json()
    expected["processes"]["/usr/bin/curl"][0] += 1  # the batch just run
    expected["processes"]["/usr/bin/curl"][2] = (READY + HOURS).timestamp()
    expected["processes"]["/usr/bin/curl"][3]["/bin/sh"] += 1
    expected["events"] += 1
    expected["last_seen"] = (READY + HOURS).timestamp()
    expected["workloads"][WORKLOAD] = (READY + HOURS).timestamp()
    assert after.to_json() == expected
    # ready, and it remembers what it already raised (no repeat within the re-alert window)
    assert await batch(sessions, restarted, exec_event("/usr/bin/xmrig", READY + 2 * HOURS)) == []
    again = await batch(sessions, restarted, exec_event("/usr/bin/nmap", READY + 2 * HOURS))
    assert "anomaly.unknown_process" in by_category(again)
    async with sessions() as session:
        workload = (await session.execute(text("SELECT * FROM analysis_profile_workloads"))).one()
    assert workload.workload_key == WORKLOAD
    assert workload.profile_key == PROFILE
    assert (workload.namespace, workload.owner_kind, workload.owner_name) == ("shop", "Deployment", "api")
    assert workload.first_seen == T0
    assert workload.last_seen >= READY


async def test_warm_start_from_postgres_for_a_new_workload(sessions: Sessions) -> None:
    await learn(sessions, detector())
    await batch(sessions, detector(), exec_event("/usr/bin/curl", READY, parent="/bin/sh"))
    other_worker = detector()
    findings = await batch(
        sessions, other_worker, exec_event("/usr/bin/xmrig", READY + HOURS, owner="api-v2")
    )
    assert "anomaly.unknown_process" in by_category(findings)
    async with sessions() as session:
        keys = (await session.scalars(text("SELECT workload_key FROM analysis_profile_workloads"))).all()
    assert sorted(keys) == [WORKLOAD, "prod/shop/Deployment/api-v2"]


async def test_a_reset_through_the_api_reloads_in_the_running_worker(sessions: Sessions) -> None:
    worker = detector()
    await learn(sessions, worker)
    await batch(sessions, worker, exec_event("/usr/bin/curl", READY, parent="/bin/sh"))
    generation, state = await stored(sessions)
    assert state == "ready"
    async with sessions() as session, session.begin():
        row = await service.resolve(session, WORKLOAD, for_update=True)
        assert row is not None
        await service.reset(session, row)
    assert await stored(sessions) == (generation + 1, "learning")
    # the worker still holds the old generation; its next batch reloads the reset profile
    assert await batch(sessions, worker, exec_event("/usr/bin/xmrig", READY + HOURS)) == []
    profile = worker.store.get(PROFILE)
    assert profile is not None
    assert profile.state == "learning"
    assert set(profile.processes) == {"/usr/bin/xmrig"}
    assert profile.first_seen == (READY + HOURS).timestamp()
    assert await stored(sessions) == (generation + 2, "learning")


async def test_a_lost_update_race_raises_and_the_retry_succeeds(sessions: Sessions) -> None:
    a, b = detector(), detector()
    await learn(sessions, a)
    await batch(sessions, b, exec_event("/usr/bin/curl", READY, parent="/bin/sh"))  # b holds it too
    generation, _ = await stored(sessions)
    # a writes first (a new process: the profile is dirty) ...
    await batch(sessions, a, exec_event("/usr/bin/id", READY + HOURS))
    # ... so b, still holding the older generation, must not write over it
    events = (exec_event("/usr/bin/whoami", READY + HOURS),)
    async with sessions() as session, session.begin():
        b.store.begin_batch({PROFILE})  # b's lookup ran before a committed
        behaviour.detect(events, b)
        with pytest.raises(ProfileConflictError, match=PROFILE):
            await behaviour.persist(session, b)
        await session.rollback()
    behaviour.discard(b)
    assert b.store.get(PROFILE) is None
    assert not b.store.dirty
    # the redelivered batch reloads a's write and goes through
    retried = await batch(sessions, b, *events)
    assert "anomaly.unknown_process" in by_category(retried)
    assert (await stored(sessions))[0] == generation + 2
    profile = b.store.get(PROFILE)
    assert profile is not None
    assert "anomaly.unknown_process\x1f/usr/bin/id" in profile.novel


async def test_a_lost_insert_race_raises(sessions: Sessions) -> None:
    a, b = detector(), detector()
    first = exec_event("/bin/sh", T0)
    async with sessions() as session, session.begin():
        await behaviour.lookup(session, (first,), b)  # nothing in Postgres yet
    await batch(sessions, a, first)
    async with sessions() as session, session.begin():
        behaviour.detect((exec_event("/bin/ls", T0),), b)
        with pytest.raises(ProfileConflictError):
            await behaviour.persist(session, b)
        await session.rollback()
    behaviour.discard(b)
    await batch(sessions, b, exec_event("/bin/ls", T0))
    profile = b.store.get(PROFILE)
    assert profile is not None
    assert set(profile.processes) == {"/bin/sh", "/bin/ls"}


async def test_a_failed_transaction_is_forgotten_and_counted_once(sessions: Sessions) -> None:
    state = detector(count_flush_interval="PT0S")
    await batch(sessions, state, exec_event("/bin/sh", T0))
    event = exec_event("/bin/sh", T0 + HOURS)

    async def failing_batch() -> None:
        # the batch's own work succeeds, then its transaction does not commit
        async with sessions() as session, session.begin():
            try:
                await behaviour.lookup(session, (event,), state)
                behaviour.detect((event,), state)
                await behaviour.persist(session, state)
                raise RuntimeError("commit failed")
            except BaseException:
                behaviour.discard(state)
                raise

    with pytest.raises(RuntimeError, match="commit failed"):
        await failing_batch()
    assert state.store.get(PROFILE) is None
    await batch(sessions, state, event)  # redelivered
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.processes["/bin/sh"].count == 2
    assert profile.events == 2


async def test_count_only_changes_are_saved_lazily(sessions: Sessions) -> None:
    state = detector(count_flush_interval="PT1H")
    await batch(sessions, state, exec_event("/bin/sh", T0))
    generation, _ = await stored(sessions)
    await batch(sessions, state, exec_event("/bin/sh", T0 + HOURS))  # a count: not written yet
    assert (await stored(sessions))[0] == generation
    await batch(sessions, state, exec_event("/bin/ls", T0 + HOURS))  # new behaviour: written, with the count
    assert (await stored(sessions))[0] == generation + 1
    async with sessions() as session:
        data = (await session.execute(text("SELECT data FROM analysis_profiles"))).scalar_one()
    assert data["processes"]["/bin/sh"][0] == 2


async def test_through_the_events_handler_with_metrics(sessions: Sessions, db: str) -> None:
    load_detectors()
    only = {"behaviour_profile"}
    detectors = DetectorSet.configure(
        {"behaviour_profile": {"learning_period": "PT1H"}},
        disabled=set(DetectorSet.configure().names) - only,
    )
    handler = EventsHandler(sessions, detectors, cluster_id="test")
    events = [
        exec_event("/usr/local/bin/python3", T0),
        exec_event("/usr/bin/apt-get", T0, arguments="install -y netcat"),
        exec_event("/usr/local/bin/python3", T0 + 2 * HOURS),
        exec_event("/usr/bin/nc", T0 + 2 * HOURS),
    ]
    envelopes = [event_envelope(e) for e in events]
    counter = ANOMALIES.labels(detector="drift", category="drift.package_manager")
    before = counter._value.get()
    await handler([Delivery(f"{i}-0", envelope, 1) for i, envelope in enumerate(envelopes)])
    assert counter._value.get() == before + 1
    async with sessions() as session:
        rows = (await session.execute(text("SELECT detector, category FROM analysis_findings"))).all()
    assert sorted(map(tuple, rows)) == [
        ("behaviour_profile", "anomaly.unknown_process"),
        ("drift", "drift.new_executable"),
        ("drift", "drift.package_manager"),
    ]
    assert await stored(sessions) == (1, "ready")
    assert (CONTAINERS_LEARNING._value.get(), CONTAINERS_READY._value.get()) == (0, 1)
    # redelivered: skipped as received, nothing learned twice
    state = detectors.state_of("behaviour_profile")
    await handler([Delivery(f"{i}-0", envelope, 2) for i, envelope in enumerate(envelopes)])
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.events == 4


async def test_a_restart_still_tells_a_backfill_from_the_present(sessions: Sessions) -> None:
    """The newest event time profiled is kept (``analysis_input_clocks``): when the first batch
    after a restart is a new image's backfill, it still learns from the present."""
    first = detector()
    await batch(sessions, first, exec_event("/usr/local/bin/python3", T0 + 5 * HOURS))
    second = detector()  # a restart
    old = exec_event("/usr/bin/sort", T0 - 3 * 24 * HOURS, owner="batch", digest=OTHER_DIGEST)
    await batch(sessions, second, old)
    newcomer = second.store.get(f"sha256:{OTHER_DIGEST}")
    assert newcomer is not None
    assert newcomer.first_seen == (T0 + 5 * HOURS).timestamp()
