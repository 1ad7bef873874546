"""Shared baselines (federation, issue 10): the view ``analysis_shared_profiles`` a spoke uploads
from, and the ``federation:baselines`` consumer that makes a new image start warm in another
cluster, with the real handlers on Postgres."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_analysis.db import downgrade, upgrade
from qcdr_analysis.detectors import behaviour
from qcdr_analysis.findings.handlers import EventsHandler, PoisonEnvelopeError
from qcdr_analysis.findings.service import DetectorSet
from qcdr_analysis.profiles import service
from qcdr_analysis.profiles.handlers import BaselinesHandler
from qcdr_analysis.profiles.shared import Outcome
from qcdr_analysis.worker import AnalysisWorker
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.federation.v1 import BASELINE_SHARED, BASELINES_STREAM, SharedBaseline
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import Delivery, Envelope, new_envelope, publish, stream_key
from qcdr_common.testing.plugin import scratch_database
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.analysis.conftest import T0, analysis_settings, event_envelope
from tests.analysis.profiles_factory import DIGEST, HOURS, OTHER_DIGEST, PROFILE, exec_event, file_event
from tests.analysis.test_worker import Running, wait_for

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]
OTHER_PROFILE = f"sha256:{OTHER_DIGEST}"
LEARNING = {"behaviour_profile": {"learning_period": "PT1H"}}
READ = "shared-baselines-read-token-0123456789"


def in_cluster(event: SecurityEvent, cluster: str) -> SecurityEvent:
    return event.model_copy(update={"workload": event.workload.model_copy(update={"cluster": cluster})})


def detectors(config: dict[str, Any] | None = None) -> DetectorSet:
    every = DetectorSet.configure().names
    return DetectorSet.configure(config or {}, disabled=set(every) - {"behaviour_profile"})


async def handle(sessions: Sessions, found: DetectorSet, *events: SecurityEvent) -> None:
    handler = EventsHandler(sessions, found, cluster_id="test")
    await handler([Delivery(f"{i}-0", event_envelope(e), 1) for i, e in enumerate(events)])


async def learn_image(sessions: Sessions, found: DetectorSet, cluster: str, digest: str = DIGEST) -> None:
    """An hour of a web app (the learning period of ``LEARNING``), then one event: ready."""
    for minutes in (0, 20, 40):
        at = T0 + timedelta(minutes=minutes)
        await handle(
            sessions,
            found,
            in_cluster(
                exec_event("/usr/local/bin/python3", at, parent="/usr/local/bin/gunicorn", digest=digest),
                cluster,
            ),
            in_cluster(file_event("/usr/local/bin/python3", "/app/config.yaml", at, digest=digest), cluster),
        )
    await handle(
        sessions, found, in_cluster(exec_event("/usr/local/bin/python3", T0 + HOURS, digest=digest), cluster)
    )


async def rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def empty(url: str) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "TRUNCATE analysis_profiles, analysis_profile_workloads, analysis_received, analysis_input_clocks"
        )
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def cluster_a_url(base_database_url: str, qcdr_worker: str) -> Iterator[str]:
    """Another cluster's analysis database (the one that learned the image)."""
    with scratch_database(base_database_url, f"qcdr_analysis_fed_a_{qcdr_worker}") as url:
        upgrade(url)
        yield url


@pytest.fixture
async def cluster_a(cluster_a_url: str) -> AsyncIterator[Sessions]:
    await empty(cluster_a_url)
    engine = make_engine(cluster_a_url)
    yield make_session_factory(engine)
    await engine.dispose()
    await empty(cluster_a_url)


@pytest.fixture
async def cluster_b(db: str) -> AsyncIterator[Sessions]:
    """This cluster's analysis database (``db``), profile tables empty before and after."""
    await empty(db)
    engine = make_engine(db)
    yield make_session_factory(engine)
    await engine.dispose()
    await empty(db)


async def shared_from_a(cluster_a: Sessions, cluster_a_url: str) -> SharedBaseline:
    """Cluster A learns the image; its spoke reads the view, as it uploads to the hub."""
    await learn_image(cluster_a, detectors(LEARNING), "cluster-a")
    (row,) = await rows(cluster_a_url, "SELECT * FROM analysis_shared_profiles")
    return SharedBaseline(
        profile_key=row["profile_key"],
        source_cluster="cluster-a",
        generation=row["generation"],
        ready_at=row["ready_at"],
        data=json.loads(row["data"]),
    )


def baseline_envelope(baseline: SharedBaseline, **kwargs: Any) -> Envelope:
    return new_envelope(
        BASELINE_SHARED, baseline, source="federation", cluster_id="cluster-b", occurred_at=T0, **kwargs
    )


def categories(found: list[asyncpg.Record]) -> set[str]:
    return {r["category"] for r in found}


# ----------------------------------------------------------------------------- the view


async def test_the_view_lists_ready_digest_profiles_learned_here_only(
    cluster_a: Sessions, cluster_a_url: str
) -> None:
    found = detectors(LEARNING)
    await learn_image(cluster_a, found, "cluster-a")  # ready
    await handle(
        cluster_a, found, in_cluster(exec_event("/bin/sh", T0, digest=OTHER_DIGEST), "cluster-a")
    )  # learning
    # the same behaviour under keys that mean nothing elsewhere
    for key in ("image:docker.io/acme/api:1.0", "sha256:not-a-digest", "workload:prod/shop/Pod/x"):
        await rows(
            cluster_a_url,
            "INSERT INTO analysis_profiles (key, state, generation, summary, data)"
            " SELECT $1, state, 1, summary, jsonb_set(data, '{key}', to_jsonb($1::text))"
            " FROM analysis_profiles WHERE key = $2",
            key,
            PROFILE,
        )
    listed = await rows(cluster_a_url, "SELECT * FROM analysis_shared_profiles")
    assert [r["profile_key"] for r in listed] == [PROFILE]
    (row,) = listed
    assert list(row.keys()) == ["profile_key", "generation", "ready_at", "data", "updated_at"]
    (table,) = await rows(cluster_a_url, "SELECT * FROM analysis_profiles WHERE key = $1", PROFILE)
    assert (row["generation"], row["ready_at"], row["updated_at"]) == (
        table["ready_generation"],
        table["ready_at"],
        table["updated_at"],
    )
    assert row["generation"] == table["generation"]  # it just became ready
    data, full = json.loads(row["data"]), json.loads(table["data"])
    assert "workloads" not in data  # this cluster's workload names stay here
    assert "novel" not in data
    assert data == {k: v for k, v in full.items() if k not in ("workloads", "novel")}
    assert data["ready"] is True


async def test_the_view_generation_changes_with_the_baseline_not_with_count_flushes(
    cluster_a: Sessions, cluster_a_url: str
) -> None:
    found = detectors({"behaviour_profile": {"learning_period": "PT1H", "count_flush_interval": "PT0S"}})
    await learn_image(cluster_a, found, "cluster-a")

    async def generations() -> tuple[int, int | None]:
        (table,) = await rows(
            cluster_a_url, "SELECT generation FROM analysis_profiles WHERE key = $1", PROFILE
        )
        shared = await rows(cluster_a_url, "SELECT generation FROM analysis_shared_profiles")
        return table["generation"], (shared[0]["generation"] if shared else None)

    row_generation, published = await generations()
    assert published == row_generation
    for minutes in (70, 80, 90):  # known behaviour: counts only, written at every batch here
        at = T0 + timedelta(minutes=minutes)
        event = exec_event("/usr/local/bin/python3", at, parent="/usr/local/bin/gunicorn")
        await handle(cluster_a, found, in_cluster(event, "cluster-a"))
    later, still = await generations()
    assert later == row_generation + 3
    assert still == published  # the spoke has nothing new to upload
    # a reset: learning again, not shared; ready again: a newer generation
    async with cluster_a() as session, session.begin():
        row = await service.resolve(session, PROFILE, for_update=True)
        assert row is not None
        await service.reset(session, row)
    assert (await generations())[1] is None
    for minutes in (120, 190):
        event = exec_event("/usr/bin/node", T0 + timedelta(minutes=minutes))
        await handle(cluster_a, found, in_cluster(event, "cluster-a"))
    relearned, again = await generations()
    assert again == relearned
    assert again is not None
    assert again > published


async def test_migration_0004_goes_down_and_up(scratch_database_url: str) -> None:
    url = scratch_database_url

    async def view_exists() -> bool:
        (row,) = await rows(url, "SELECT to_regclass('analysis_shared_profiles') IS NOT NULL AS present")
        return bool(row["present"])

    await asyncio.to_thread(upgrade, url)
    assert await view_exists()
    assert await asyncio.to_thread(downgrade, url, "0003") == "0003"
    assert not await view_exists()
    columns = await rows(
        url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'analysis_profiles'"
    )
    assert "ready_generation" not in {c["column_name"] for c in columns}
    # profiles that were ready before the upgrade are published at their current generation
    for key, state in ((PROFILE, "ready"), (OTHER_PROFILE, "learning")):
        await rows(
            url,
            "INSERT INTO analysis_profiles (key, state, generation, summary, data)"
            " VALUES ($1, $2, 7, '{}', jsonb_build_object('key', $1::text, 'novel', '[]'::jsonb))",
            key,
            state,
        )
    assert await asyncio.to_thread(upgrade, url, "0004") == "0004"
    assert await view_exists()
    shared = await rows(url, "SELECT profile_key, generation, data FROM analysis_shared_profiles")
    assert [(r["profile_key"], r["generation"], json.loads(r["data"])) for r in shared] == [
        (PROFILE, 7, {"key": PROFILE})
    ]


# ----------------------------------------------------------------------------- importing


async def test_a_shared_baseline_makes_a_new_workload_start_warm(
    cluster_a: Sessions, cluster_a_url: str, cluster_b: Sessions, db: str, redis_url: str
) -> None:
    baseline = await shared_from_a(cluster_a, cluster_a_url)
    found = detectors()  # cluster B learns for the default 48 h
    imported = await BaselinesHandler(cluster_b, found).apply([(baseline_envelope(baseline), baseline)])
    assert [(i.profile_key, i.outcome, i.generation) for i in imported] == [(PROFILE, Outcome.INSERTED, 1)]

    # a new workload of the image in cluster B runs a binary the image never ran in A
    at = T0 + 2 * HOURS
    await handle(
        cluster_b, found, in_cluster(exec_event("/usr/bin/xmrig", at, owner="miner-job"), "cluster-b")
    )
    raised = await rows(db, "SELECT category, cluster FROM analysis_findings")
    assert categories(raised) == {"anomaly.unknown_process", "drift.new_executable"}
    assert {r["cluster"] for r in raised} == {"cluster-b"}
    state: behaviour.State = found.state_of(behaviour.NAME)
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.ready
    assert "/usr/bin/xmrig" not in profile.processes  # reported, not learned
    assert set(profile.processes) == {"/usr/local/bin/python3"}  # A's baseline
    assert set(profile.workloads) == {"cluster-b/shop/Deployment/miner-job"}  # A's stay in A
    (row,) = await rows(db, "SELECT state, summary, data FROM analysis_profiles WHERE key = $1", PROFILE)
    assert row["state"] == "ready"
    assert '"shared_from": "cluster-a"' in row["summary"]

    # the control: the same event of an image nobody shared is learned, not reported
    await handle(
        cluster_b,
        found,
        in_cluster(exec_event("/usr/bin/xmrig", at, owner="miner-job", digest=OTHER_DIGEST), "cluster-b"),
    )
    assert len(await rows(db, "SELECT 1 FROM analysis_findings")) == len(raised)
    other = state.store.get(OTHER_PROFILE)
    assert other is not None
    assert other.state == "learning"
    assert "/usr/bin/xmrig" in other.processes

    # where it came from, in the API
    app = create_app(
        analysis_settings(database_url=db, redis_url=redis_url),
        auth=ApiAuthSettings(token_read=SecretStr(READ)),
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://analysis", headers={"Authorization": f"Bearer {READ}"}
        ) as client:
            body = (await client.get(f"/v1/profiles/{PROFILE}")).json()
            assert body["state"] == "ready"
            assert body["shared_from"] == "cluster-a"
            assert body["shared"]["cluster"] == "cluster-a"
            assert body["shared"]["generation"] == baseline.generation
            assert [w["cluster"] for w in body["workloads"]] == ["cluster-b"]
            local = (await client.get(f"/v1/profiles/{OTHER_PROFILE}")).json()
            assert local["shared_from"] is None
            assert local["shared"] is None
            listed = {p["key"]: p["shared_from"] for p in (await client.get("/v1/profiles")).json()["items"]}
            assert listed == {PROFILE: "cluster-a", OTHER_PROFILE: None}
    # and a taken baseline is not offered back (it is cluster A's, not this cluster's)
    assert await rows(db, "SELECT 1 FROM analysis_shared_profiles") == []


async def test_a_learning_profile_in_a_running_worker_is_replaced(
    cluster_a: Sessions, cluster_a_url: str, cluster_b: Sessions, db: str
) -> None:
    baseline = await shared_from_a(cluster_a, cluster_a_url)
    found = detectors()
    # cluster B started learning the image (in memory and in Postgres) before the baseline came
    await handle(cluster_b, found, in_cluster(exec_event("/bin/sh", T0 + HOURS, owner="web"), "cluster-b"))
    state: behaviour.State = found.state_of(behaviour.NAME)
    held = state.store.get(PROFILE)
    assert held is not None
    assert held.state == "learning"
    assert held.generation == 1

    handler = BaselinesHandler(cluster_b, found)
    (imported,) = await handler.apply([(baseline_envelope(baseline), baseline)])
    assert (imported.outcome, imported.generation) == (Outcome.REPLACED, 2)
    assert state.store.get(PROFILE) is None  # the worker's copy is dropped: reloaded next batch

    await handle(
        cluster_b, found, in_cluster(exec_event("/usr/bin/xmrig", T0 + 2 * HOURS, owner="web"), "cluster-b")
    )
    assert categories(await rows(db, "SELECT category FROM analysis_findings")) == {
        "anomaly.unknown_process",
        "drift.new_executable",
    }
    profile = state.store.get(PROFILE)
    assert profile is not None
    assert profile.shared is not None
    assert profile.shared["from"] == "cluster-a"
    assert "/bin/sh" not in profile.processes  # B's partial window is dropped ...
    assert "cluster-b/shop/Deployment/web" in profile.workloads  # ... its workloads kept


async def test_a_local_ready_profile_is_never_replaced(
    cluster_a: Sessions, cluster_a_url: str, cluster_b: Sessions, db: str
) -> None:
    baseline = await shared_from_a(cluster_a, cluster_a_url)
    found = detectors(LEARNING)
    await learn_image(cluster_b, found, "cluster-b")
    before = await rows(
        db, "SELECT generation, state, data, summary FROM analysis_profiles WHERE key = $1", PROFILE
    )
    assert before[0]["state"] == "ready"
    (imported,) = await BaselinesHandler(cluster_b, found).apply([(baseline_envelope(baseline), baseline)])
    assert imported.outcome is Outcome.KEPT
    assert not imported.changed
    after = await rows(
        db, "SELECT generation, state, data, summary FROM analysis_profiles WHERE key = $1", PROFILE
    )
    assert after == before
    assert "shared_from" not in after[0]["summary"]
    assert state_of(found).store.get(PROFILE) is not None  # nothing to reload


def state_of(found: DetectorSet) -> behaviour.State:
    state: behaviour.State = found.state_of(behaviour.NAME)
    return state


async def test_redelivery_is_harmless(
    cluster_a: Sessions, cluster_a_url: str, cluster_b: Sessions, db: str
) -> None:
    baseline = await shared_from_a(cluster_a, cluster_a_url)
    found = detectors()
    handler = BaselinesHandler(cluster_b, found)
    envelope = baseline_envelope(baseline)
    await handler([Delivery("1-0", envelope, 1)])
    first = await rows(db, "SELECT generation, data, summary FROM analysis_profiles")
    await handler([Delivery("1-0", envelope, 2)])  # the same envelope again (a claim after a crash)
    assert await handler.apply([(envelope, baseline)]) == []  # recorded as received: skipped
    again = baseline_envelope(baseline)  # the spoke published it once more (a cursor reset)
    (imported,) = await handler.apply([(again, baseline)])
    assert imported.outcome is Outcome.KEPT
    assert await rows(db, "SELECT generation, data, summary FROM analysis_profiles") == first
    assert len(first) == 1
    assert first[0]["generation"] == 1


async def test_a_baseline_that_is_no_ready_profile_is_poison(
    cluster_a: Sessions, cluster_a_url: str, cluster_b: Sessions, db: str
) -> None:
    good = await shared_from_a(cluster_a, cluster_a_url)
    other_key = good.model_copy(update={"profile_key": OTHER_PROFILE})
    not_ready = good.model_copy(update={"data": {**good.data, "ready": False}})
    garbage = good.model_copy(update={"data": {"v": 99}})
    extra = {f"/opt/tool-{i}": [1, 0.0, 0.0, {}, {}] for i in range(2)}
    too_big = good.model_copy(
        update={"data": {**good.data, "processes": {**good.data["processes"], **extra}}}
    )
    # right shape, wrong types: imported, these made GET /v1/profiles/{key} a 500 and the
    # behaviour detector fail on every event of the image, for good (a ready profile is kept)
    (path, (count, first, last, parents, hashes)) = next(iter(good.data["processes"].items()))
    text_times = good.model_copy(
        update={"data": {**good.data, "processes": {path: [count, "2026-03-01T12:00:00Z", last, {}, {}]}}}
    )
    bool_count = good.model_copy(
        update={"data": {**good.data, "processes": {path: [True, first, last, parents, hashes]}}}
    )
    shape = good.model_copy(update={"data": {**good.data, "processes": {path: [count, first, last, [], {}]}}})
    handler = BaselinesHandler(cluster_b, detectors({"behaviour_profile": {"max_processes": 2}}))
    batch = [other_key, good, not_ready, garbage, too_big, text_times, bool_count, shape]
    deliveries = [Delivery(f"{i}-0", baseline_envelope(b), 1) for i, b in enumerate(batch)]
    with pytest.raises(PoisonEnvelopeError) as error:
        await handler(deliveries)
    reasons = dict(error.value.problems)
    assert list(reasons) == [deliveries[i].envelope.id for i in (0, 2, 3, 4, 5, 6, 7)]
    assert "not 'sha256:0de1" in reasons[deliveries[0].envelope.id]
    assert "not a ready profile" in reasons[deliveries[2].envelope.id]
    assert "not a profile" in reasons[deliveries[3].envelope.id]
    assert "3 processes, more than this cluster's cap of 2" in reasons[deliveries[4].envelope.id]
    assert "time '2026-03-01T12:00:00Z' is not epoch seconds" in reasons[deliveries[5].envelope.id]
    assert "count True is not a non-negative integer" in reasons[deliveries[6].envelope.id]
    assert "not a profile" in reasons[deliveries[7].envelope.id]
    # the good one of the batch is in
    assert [r["key"] for r in await rows(db, "SELECT key FROM analysis_profiles")] == [PROFILE]


# ----------------------------------------------------------------------------- in the worker


async def test_the_worker_consumes_federation_baselines(
    cluster_a: Sessions,
    cluster_a_url: str,
    cluster_b: Sessions,
    db: str,
    redis_client: Any,
    redis_prefix: str,
) -> None:
    baseline = await shared_from_a(cluster_a, cluster_a_url)
    engine = make_engine(db)
    off = AnalysisWorker(
        analysis_settings(redis_prefix=redis_prefix, shared_baselines_enabled=False), engine, redis_client
    )
    assert off.baselines_consumer is None
    worker = AnalysisWorker(analysis_settings(redis_prefix=redis_prefix), engine, redis_client)
    assert worker.baselines_consumer is not None
    key = stream_key(redis_prefix, BASELINES_STREAM)
    await publish(redis_client, key, [baseline_envelope(baseline)], maxlen=1000)
    running = Running(worker)

    async def taken() -> bool:
        return bool(
            await rows(db, "SELECT 1 FROM analysis_profiles WHERE key = $1 AND state = 'ready'", PROFILE)
        )

    try:
        await wait_for(taken, 20)
    finally:
        await running.close()
        await engine.dispose()
    (row,) = await rows(db, "SELECT summary FROM analysis_profiles WHERE key = $1", PROFILE)
    assert '"shared_from": "cluster-a"' in row["summary"]
