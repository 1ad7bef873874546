"""The spoke's tables: migration 0004 against the models, the policy set stored with its outbox
envelopes in one transaction, statuses guarded by the held generation (and left unreported until
the hub took them), and the state row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import (
    POLICIES_STREAM,
    POLICY_PLACED,
    POLICY_REMOVED,
    PlacedPolicy,
    PlacedPolicySet,
    PolicyApplyState,
    PolicyPlaced,
    PolicyRemoved,
)
from qcdr_common.db import make_session_factory
from qcdr_common.streams.envelope import Envelope
from qcdr_common.streams.outbox import OutboxRelay
from qcdr_federation.db import VERSION_TABLE, downgrade, upgrade
from qcdr_federation.db.base import OUTBOX
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import Credential, HubClient, HubError
from qcdr_federation.spoke.models import (
    SpokeBaselineRow,
    SpokeCommandResultRow,
    SpokePolicyRow,
    SpokePolicyStatusRow,
    SpokeReplicaRow,
    SpokeStateRow,
)
from qcdr_federation.spoke.policies import apply_placed_set
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import AgentState
from qcdr_federation.spoke.status import StatusTracker, StatusUpdate, record_update
from redis.asyncio import Redis
from sqlalchemy import Connection, MetaData, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.federation.spoke.conftest import make_spoke_settings, read_stream

pytestmark = [pytest.mark.db]

SPOKE_TABLES = (
    SpokeStateRow,
    SpokePolicyRow,
    SpokePolicyStatusRow,
    SpokeBaselineRow,
    SpokeCommandResultRow,
    SpokeReplicaRow,
)


# --------------------------------------------------------------------------- migration


def _differences(url: str) -> tuple[set[str], list[Any]]:
    metadata = MetaData()
    for model in SPOKE_TABLES:
        model.__table__.to_metadata(metadata)  # type: ignore[attr-defined]

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
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_migration_0004_matches_the_models_and_goes_down_and_up(scratch_database_url: str) -> None:
    names = {model.__tablename__ for model in SPOKE_TABLES}
    upgrade(scratch_database_url, "head")
    tables, differences = _differences(scratch_database_url)
    assert names <= tables
    assert differences == []
    downgrade(scratch_database_url, "0003")
    tables, _ = _differences(scratch_database_url)
    assert not names & tables
    upgrade(scratch_database_url, "head")
    tables, differences = _differences(scratch_database_url)
    assert names <= tables
    assert differences == []


# --------------------------------------------------------------------------- the policy set


def manifest(name: str, namespace: str | None = None) -> dict[str, Any]:
    kind = "TracingPolicyNamespaced" if namespace else "TracingPolicy"
    metadata: dict[str, Any] = {"name": name, "labels": {"federation.qualys.com/policy-id": name}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "cilium.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": {"kprobes": []}}


def policy(pid: str, generation: int = 1, content_hash: str = "h1", **kw: Any) -> PlacedPolicy:
    return PlacedPolicy(
        policy_id=pid,
        name=f"name-{pid}",
        generation=generation,
        content_hash=content_hash,
        enforce=kw.pop("enforce", False),
        manifest=manifest(kw.pop("manifest_name", pid), kw.pop("namespace", None)),
    )


def placed_set(*policies: PlacedPolicy, etag: str = "e") -> PlacedPolicySet:
    return PlacedPolicySet(cluster="spoke-a", etag=etag, policies=policies)


async def outbox_envelopes(engine: AsyncEngine) -> list[tuple[str, Envelope]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(OUTBOX.c.stream, OUTBOX.c.data).order_by(OUTBOX.c.id))).all()
    return [(r.stream, Envelope.from_json(bytes(r.data))) for r in rows]


async def apply(engine: AsyncEngine, placed: PlacedPolicySet) -> Any:
    sessions = make_session_factory(engine)
    async with sessions() as session:
        await repo.ensure_state(session, "spoke-a", "http://hub")
        changes = await apply_placed_set(session, placed, placed.etag, cluster_id="spoke-a")
        await session.commit()
    return changes


async def test_a_new_set_is_stored_with_its_envelopes_and_pending_statuses(spoke_engine: AsyncEngine) -> None:
    await apply(
        spoke_engine, placed_set(policy("p1"), policy("p2", namespace="web", enforce=True), etag="e1")
    )
    out = await outbox_envelopes(spoke_engine)
    assert {stream for stream, _ in out} == {POLICIES_STREAM}
    assert [e.type for _, e in out] == [POLICY_PLACED, POLICY_PLACED]
    payloads = {e.payload["policy_id"]: e.payload_as(PolicyPlaced) for _, e in out}
    assert payloads["p2"].enforce is True
    assert payloads["p2"].cluster == "spoke-a"
    assert payloads["p2"].manifest["metadata"]["namespace"] == "web"
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:
        state = await repo.get_state(session)
        assert state is not None
        assert state.policies_etag == "e1"
        held = await repo.held_with_status(session)
    assert [(h.policy.policy_id, h.policy.kind, h.policy.namespace) for h in held] == [
        ("p1", "TracingPolicy", None),
        ("p2", "TracingPolicyNamespaced", "web"),
    ]
    assert {h.status.state for h in held if h.status} == {PolicyApplyState.PENDING.value}

    # the same set again: nothing to publish
    assert not await apply(
        spoke_engine, placed_set(policy("p1"), policy("p2", namespace="web", enforce=True))
    )
    assert len(await outbox_envelopes(spoke_engine)) == 2


async def test_changes_and_removals_are_published(spoke_engine: AsyncEngine) -> None:
    await apply(spoke_engine, placed_set(policy("p1"), policy("p2"), policy("p3")))
    changes = await apply(
        spoke_engine,
        placed_set(policy("p1", 2, "h2"), policy("p2", 1, "h1b"), etag="e2"),
    )
    assert sorted(p.policy_id for p in changes.placed) == ["p1", "p2"]
    out = [e for _, e in await outbox_envelopes(spoke_engine)][3:]
    assert [(e.type, e.payload["policy_id"]) for e in out] == [
        (POLICY_REMOVED, "p3"),
        (POLICY_PLACED, "p1"),
        (POLICY_PLACED, "p2"),
    ]
    removed = out[0].payload_as(PolicyRemoved)
    assert (removed.kind, removed.manifest_name, removed.api_version, removed.namespace) == (
        "TracingPolicy",
        "p3",
        "cilium.io/v1alpha1",
        None,
    )
    assert out[1].payload["generation"] == 2
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:
        held = await repo.held_policies(session)
        statuses = {s.policy_id for s in (await session.execute(select(SpokePolicyStatusRow))).scalars()}
    assert set(held) == {"p1", "p2"}
    assert held["p1"].generation == 2
    assert statuses == {"p1", "p2"}

    # every message carries its set's number: the first set was 1, this one 2, and an unchanged
    # set takes no number (the response service orders one policy's messages by it)
    first = [e for _, e in await outbox_envelopes(spoke_engine)][:3]
    assert {e.payload["sequence"] for e in first} == {1}
    assert {e.payload["sequence"] for e in out} == {2}
    assert not await apply(spoke_engine, placed_set(policy("p1", 2, "h2"), policy("p2", 1, "h1b")))
    await apply(spoke_engine, placed_set(policy("p1", 3, "h3"), policy("p2", 1, "h1b")))
    assert [e for _, e in await outbox_envelopes(spoke_engine)][-1].payload["sequence"] == 3


async def test_the_relay_publishes_on_the_spokes_prefix(
    spoke_engine: AsyncEngine, redis_client: Redis, spoke_prefix: str
) -> None:
    await apply(spoke_engine, placed_set(policy("p1")))
    relay = OutboxRelay(spoke_engine, redis_client, OUTBOX, prefix=spoke_prefix, maxlen=10_000)
    assert await relay.publish_pending() == 1
    envelopes = await read_stream(redis_client, spoke_prefix, POLICIES_STREAM)
    assert [(e.type, e.payload["policy_id"], e.source) for e in envelopes] == [
        (POLICY_PLACED, "p1", "federation")
    ]


async def test_a_failed_transaction_leaves_the_last_good_set(spoke_engine: AsyncEngine) -> None:
    await apply(spoke_engine, placed_set(policy("p1"), etag="e1"))
    sessions = make_session_factory(spoke_engine)
    async with sessions() as session:
        await apply_placed_set(session, placed_set(policy("p9"), etag="e9"), "e9", cluster_id="spoke-a")
        await session.rollback()  # e.g. the commit failed
    async with sessions() as session:
        state = await repo.get_state(session)
        held = await repo.held_policies(session)
    assert state is not None
    assert state.policies_etag == "e1"
    assert set(held) == {"p1"}
    assert len(await outbox_envelopes(spoke_engine)) == 1


# --------------------------------------------------------------------------- statuses


def update(pid: str, generation: int, state: PolicyApplyState, at: datetime, **kw: Any) -> StatusUpdate:
    return StatusUpdate(
        policy_id=pid,
        generation=generation,
        content_hash=kw.get("content_hash"),
        state=state,
        message=kw.get("message"),
        observed_at=at,
    )


async def test_statuses_follow_the_held_generation_only(spoke_engine: AsyncEngine) -> None:
    await apply(spoke_engine, placed_set(policy("p1", 2, "h2")))
    sessions = make_session_factory(spoke_engine)
    now = datetime.now(UTC) + timedelta(seconds=1)

    async def record(u: StatusUpdate) -> bool:
        async with sessions() as session:
            changed = await record_update(session, u)
            await session.commit()
        return changed

    assert not await record(update("p1", 1, PolicyApplyState.APPLIED, now))  # an older generation
    assert not await record(update("nope", 2, PolicyApplyState.APPLIED, now))  # not held
    assert not await record(update("p1", 2, PolicyApplyState.APPLIED, now, content_hash="other"))
    assert await record(update("p1", 2, PolicyApplyState.PROPOSED, now, content_hash="h2"))
    assert await record(update("p1", 2, PolicyApplyState.FAILED, now + timedelta(seconds=1), message="boom"))
    # a redelivered older event does not undo the newer status
    assert not await record(update("p1", 2, PolicyApplyState.PROPOSED, now))
    async with sessions() as session:
        rows = await repo.unreported(session, 10)
    assert [(r.policy_id, r.state, r.message, r.generation, r.content_hash) for r in rows] == [
        ("p1", "failed", "boom", 2, "h2")
    ]
    async with sessions() as session:
        await repo.mark_reported(session, [(r.policy_id, r.generation, r.observed_at) for r in rows], now)
        await session.commit()
    async with sessions() as session:
        assert await repo.unreported(session, 10) == []
    # a status that changed after it was sent stays unreported
    assert await record(update("p1", 2, PolicyApplyState.APPLIED, now + timedelta(seconds=2)))
    async with sessions() as session:
        await repo.mark_reported(session, [(r.policy_id, r.generation, r.observed_at) for r in rows], now)
        await session.commit()
        assert [r.state for r in await repo.unreported(session, 10)] == ["applied"]


# --------------------------------------------------------------------------- state row


async def test_a_status_report_the_hub_did_not_take_stays_unreported(spoke_engine: AsyncEngine) -> None:
    """A redirect (an ingress in front of the hub) counted as delivered: the statuses were marked
    reported and never sent again. The report fails (retried later) and they stay unreported."""
    await apply(spoke_engine, placed_set(policy("p1"), etag="e1"))
    s = make_spoke_settings(
        "postgresql+asyncpg://unused@127.0.0.1/unused", "redis://127.0.0.1", "p", "http://hub.test"
    )

    def redirecting(request: httpx.Request) -> httpx.Response:
        return httpx.Response(308, headers={"Location": "https://hub.test" + request.url.path})

    sessions = make_session_factory(spoke_engine)
    state = AgentState.from_settings(s)
    client = HubClient(s, transport=httpx.MockTransport(redirecting))
    client.credential = Credential("cid", SecretStr("cid.secret"))
    tracker = StatusTracker(s, sessions, client, Registrar(s, sessions, client, state), state)
    try:
        with pytest.raises(HubError, match="308"):
            await tracker.report_once()
    finally:
        await client.aclose()
    async with sessions() as session:
        assert [r.policy_id for r in await repo.unreported(session, 10)] == ["p1"]


async def test_state_is_reset_when_the_hub_or_name_changes(spoke_engine: AsyncEngine) -> None:
    sessions = make_session_factory(spoke_engine)
    now = datetime.now(UTC)
    async with sessions() as session:
        await repo.ensure_state(session, "spoke-a", "http://hub-1")
        await repo.store_credential(
            session, cluster_id="c1", credential_id="k1", credential="k1.s", issued_at=now, registered=True
        )
        await repo.set_policies_etag(session, "e1")
        await session.commit()
    async with sessions() as session:
        row, reset = await repo.ensure_state(session, "spoke-a", "http://hub-1")
        await session.commit()
    assert not reset
    assert (row.credential_id, row.policies_etag, row.registered_at) == ("k1", "e1", now)
    async with sessions() as session:
        assert not await repo.drop_credential(session, "other", "401")
        row, reset = await repo.ensure_state(session, "spoke-a", "http://hub-2")
        await session.commit()
    assert reset
    assert (row.credential_id, row.credential, row.policies_etag, row.cluster_id) == (None, None, None, None)
