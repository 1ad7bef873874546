"""The decision log: stored off the request path (dry runs excepted), listed with filters and
cursor pages, published as admission.decision_made through the outbox; the migration matches the
models."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from pydantic import SecretStr
from qcdr_admission.app import create_app
from qcdr_admission.db import VERSION_TABLE
from qcdr_admission.db.models import metadata
from qcdr_admission.decisions import writer
from qcdr_admission.decisions.event import EVENT_TYPE, AdmissionDecision
from qcdr_admission.decisions.writer import DecisionLog, PendingDecision
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.streams.envelope import Envelope
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.admission.webhook.conftest import (
    READ,
    WRITE,
    admission_settings,
    baseline_pod,
    deployment_of,
    privileged_pod,
    restricted_pod,
    review,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]


@dataclass
class Api:
    client: httpx.AsyncClient
    redis: Any
    prefix: str

    async def validate(self, rv: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post("/validate", content=orjson.dumps(rv))
        assert r.status_code == 200, r.text
        return dict(r.json()["response"])

    async def decisions(self, **params: Any) -> dict[str, Any]:
        r = await self.client.get(
            "/v1/admission/decisions", params=params, headers={"Authorization": f"Bearer {READ}"}
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        for _ in range(200):
            items = (await self.decisions(limit=1000))["items"]
            if len(items) >= count:
                return list(items)
            await asyncio.sleep(0.02)
        raise AssertionError(f"only {len(items)} decisions stored, expected {count}")


@pytest.fixture
async def api(committed_db: str, redis_url: str, redis_prefix: str, redis_client: Any) -> AsyncIterator[Api]:
    settings = admission_settings(
        database_url=committed_db,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        decisions_enabled=True,
        decisions_flush_s=0.05,
        cluster_id="test-cluster",
    )
    app = create_app(settings, auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://admission") as client:
            yield Api(client, redis_client, redis_prefix)


async def test_decisions_stored_filtered_paged_and_published(api: Api) -> None:
    denied = await api.validate(review(privileged_pod("bad"), user="mallory"))
    assert denied["allowed"] is False
    await api.validate(review(restricted_pod("good"), namespace="other"))
    await api.validate(review(deployment_of(baseline_pod(), name="dep"), group="apps"))
    old = privileged_pod("bad")
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"x": "y"}
    await api.validate(review(relabelled, operation="UPDATE", old=old))
    dry = await api.validate(review(privileged_pod("dry"), dry_run=True))
    assert dry["allowed"] is False  # answered, but not stored

    items = await api.wait_for(4)
    await asyncio.sleep(0.2)  # a dry run would have been flushed by now
    items = (await api.decisions())["items"]
    assert len(items) == 4
    assert [i["name"] for i in items] == ["bad", "dep", "good", "bad"]  # newest first
    by_name = {(i["name"], i["operation"]): i for i in items}
    bad = by_name[("bad", "CREATE")]
    assert bad["user"] == "mallory"
    assert bad["allowed"] is False
    assert bad["evaluated"] is True
    assert bad["images"] == ["nginx:1.27"]
    assert bad["kind"] == "Pod"
    assert bad["namespace"] == "shop"
    enforced = {(v["source"], v["check"]) for v in bad["violations"] if v["mode"] == "enforce"}
    # the PSS checks, and (the app as served: policies installed) the built-in policy's
    assert {c for s, c in enforced if s == "pss"} == {"hostNamespaces", "privileged"}
    assert any(s.startswith("policy:") for s, _ in enforced)
    skipped = by_name[("bad", "UPDATE")]
    assert skipped["evaluated"] is False
    assert skipped["skipped"] == "metadata-only"
    assert skipped["allowed"] is True

    assert [i["name"] for i in (await api.decisions(namespace="other"))["items"]] == ["good"]
    assert [i["name"] for i in (await api.decisions(allowed=False))["items"]] == ["bad"]
    assert [i["name"] for i in (await api.decisions(check="privileged"))["items"]] == ["bad"]
    assert {i["name"] for i in (await api.decisions(check="runAsNonRoot"))["items"]} == {"bad", "dep"}
    assert [i["name"] for i in (await api.decisions(kind="Deployment"))["items"]] == ["dep"]
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert (await api.decisions(since=future))["items"] == []
    first = await api.decisions(limit=3)
    assert len(first["items"]) == 3
    assert first["next_cursor"]
    rest = await api.decisions(limit=3, cursor=first["next_cursor"])
    assert [i["id"] for i in rest["items"]] == [items[-1]["id"]]
    assert rest["next_cursor"] is None

    # published through the outbox: one event per stored decision, with the same envelope id
    stream = f"{api.prefix}:admission:decisions"
    for _ in range(200):
        entries = await api.redis.xrange(stream)
        if len(entries) >= 4:
            break
        await asyncio.sleep(0.02)
    assert len(entries) == 4
    envelopes = [Envelope.from_fields(fields) for _, fields in entries]
    assert {e.type for e in envelopes} == {EVENT_TYPE}
    assert {e.id for e in envelopes} == {i["event_id"] for i in items}
    assert {e.cluster_id for e in envelopes} == {"test-cluster"}
    decisions = {d.uid: d for d in (e.payload_as(AdmissionDecision) for e in envelopes)}
    assert decisions[bad["uid"]].allowed is False
    assert decisions[bad["uid"]].user == "mallory"


async def test_decisions_api_needs_the_read_scope(api: Api) -> None:
    r = await api.client.get("/v1/admission/decisions")
    assert r.status_code == 401
    r = await api.client.get(
        "/v1/admission/decisions", params={"cursor": "x!"}, headers={"Authorization": f"Bearer {READ}"}
    )
    assert r.status_code == 422


async def test_write_failure_never_reaches_the_request(redis_url: str) -> None:
    settings = admission_settings(
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        redis_url=redis_url,
        decisions_enabled=True,
        decisions_flush_s=0.05,
        relay_in_app=False,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://a") as client:
            r = await client.post("/validate", content=orjson.dumps(review(restricted_pod())))
            assert r.status_code == 200
            assert r.json()["response"]["allowed"] is True
            log = app.state.decision_log
            log.attempts = 1
            assert await log.flush() == 0  # dropped and counted, the service goes on


async def test_a_decision_is_stored_with_its_outbox_row_or_not_at_all(
    committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the second COPY (the outbox rows) fails: the first (the decisions) must not stay committed,
    # or the decisions would be stored and never published
    monkeypatch.setattr(writer, "OUTBOX", SimpleNamespace(name="no_such_outbox"))
    engine = create_async_engine(committed_db, poolclass=NullPool)
    try:
        log = DecisionLog(engine, cluster_id="c1", attempts=1)
        log.record(
            PendingDecision(
                at=time.time(),
                uid="u1",
                operation="CREATE",
                kind="Pod",
                namespace="shop",
                name="api",
                user="alice",
                allowed=True,
                skipped=None,
                results=[],
                images=["registry.example/shop/api:1"],
            )
        )
        assert await log.flush() == 0  # failed and dropped (counted)
        async with engine.connect() as conn:
            stored = await conn.scalar(text("SELECT count(*) FROM admission_decisions"))
        assert stored == 0
    finally:
        await engine.dispose()


async def test_a_nul_character_is_stored_as_a_replacement_and_costs_no_other_decision(api: Api) -> None:
    # JSON allows "\u0000" in any string of a review, PostgreSQL refuses NUL in text and jsonb:
    # one such review (the webhook answers anyone) used to fail the COPY of its whole batch, so
    # every decision flushed with it was retried and then dropped
    await api.validate(review(baseline_pod("before"), user="alice"))
    evil = privileged_pod("bad\x00")
    evil["spec"]["containers"][0]["name"] = "app\x00"
    evil["spec"]["containers"][0]["image"] = "nginx:1.27\x00"
    verdict = await api.validate(review(evil, user="mallory\x00", namespace="shop\x00"))
    assert verdict["allowed"] is False  # the verdict is the one without the NUL
    await api.validate(review(baseline_pod("after"), user="bob"))

    items = await api.wait_for(3)
    by_user = {i["user"]: i for i in items}
    assert set(by_user) == {"alice", "mallory\ufffd", "bob"}
    stored = by_user["mallory\ufffd"]
    assert stored["name"] == "bad\ufffd"
    assert stored["namespace"] == "shop\ufffd"
    assert stored["images"] == ["nginx:1.27\ufffd"]
    assert any("app\ufffd" in v["message"] for v in stored["violations"])  # inside the jsonb too


async def test_a_value_postgres_refuses_drops_only_its_own_decision(
    committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the second line of defence, for a value no check foresaw: a data error (SQLSTATE class 22)
    # is not retried, the batch is split until the refused decision is found, and only that one
    # is dropped (counted); the NUL cleaning is switched off to have such a value
    monkeypatch.setattr(writer, "storable", lambda p: p, raising=False)

    def unstorable() -> float:
        return (
            REGISTRY.get_sample_value("qcdr_admission_decisions_dropped_total", {"why": "unstorable"}) or 0.0
        )

    dropped = unstorable()
    engine = create_async_engine(committed_db, poolclass=NullPool)
    try:
        log = DecisionLog(engine, cluster_id="c1", attempts=3)
        users = [f"user-{n}" for n in range(10)]
        users[3], users[8] = "mallory\x00", "eve\x00"
        for n, user in enumerate(users):
            log.record(
                PendingDecision(
                    time.time(), f"u{n}", "CREATE", "Pod", "shop", "web", user, True, None, [], []
                )
            )
        started = time.monotonic()
        assert await log.flush() == 8
        assert time.monotonic() - started < 1.5  # no back-off (0.5 + 1 s): no retry can succeed
        async with engine.connect() as conn:
            stored = set(await conn.scalars(text("SELECT username FROM admission_decisions")))
            published = await conn.scalar(text("SELECT count(*) FROM admission_outbox"))
    finally:
        await engine.dispose()
    assert stored == {u for u in users if "\x00" not in u}
    assert published == 8
    assert (
        REGISTRY.get_sample_value("qcdr_admission_decisions_dropped_total", {"why": "unstorable"})
        == dropped + 2
    )


def test_migration_matches_the_models(committed_database_url: str) -> None:
    def run(connection: Connection) -> tuple[set[str], list[Any]]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_name": lambda name, type_, _: type_ != "table" or name in metadata.tables,
            },
        )
        return set(inspect(connection).get_table_names()), compare_metadata(context, metadata)

    async def main() -> tuple[set[str], list[Any]]:
        engine = create_async_engine(committed_database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run)
        finally:
            await engine.dispose()

    tables, diff = asyncio.run(main())
    assert {"admission_decisions", "admission_outbox"} <= tables
    assert diff == []
