"""Queueing findings for sinks: severity filter, grouping within the window, updates after a
group went out, and resolves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.grouping import enqueue, group_key
from qcdr_response.outputs.models import OutputQueueRow
from qcdr_response.outputs.resolve import enqueue_resolve
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import T0, make_finding

pytestmark = [pytest.mark.db]

NOW = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)


async def rows(session: AsyncSession, sink: str = "all") -> list[OutputQueueRow]:
    return list(
        await session.scalars(
            select(OutputQueueRow).where(OutputQueueRow.sink == sink).order_by(OutputQueueRow.id)
        )
    )


async def test_one_message_per_group_with_a_count_then_updates(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sink = SinkConfig(name="all", group_window_s=600)
    same = [make_finding(event_time=T0 + timedelta(seconds=i)) for i in range(3)]
    async with sessions.begin() as session:
        assert await enqueue(session, [sink], same, cluster_id="c1", now=NOW) == 3
        [row] = await rows(session)
        assert row.kind == "alert"
        assert row.count == 3
        assert row.payload["finding_ids"] == [f.id for f in same]
        assert row.payload["first_seen"] == T0.isoformat().replace("+00:00", "Z")
        message_id = row.message_id

        row.attempts = 1  # an attempt went out with count 3: its content must not change now
        more = [make_finding(event_time=T0 + timedelta(seconds=60 + i)) for i in range(2)]
        await enqueue(session, [sink], more, cluster_id="c1", now=NOW)
        first, update = await rows(session)
        assert first.message_id == message_id
        assert first.count == 3
        assert update.kind == "update"
        assert update.group_key == first.group_key
        assert update.count == 5
        assert update.message_id != message_id

        late = make_finding(event_time=T0 + timedelta(seconds=601))
        await enqueue(session, [sink], [late], cluster_id="c1", now=NOW)
        *_, fresh = await rows(session)
        assert fresh.kind == "alert"
        assert fresh.count == 1

        other = make_finding(namespace="shop", event_time=T0)
        await enqueue(session, [sink], [other], cluster_id="c1", now=NOW)
        assert len(await rows(session)) == 4


async def test_severity_filter_and_disabled_sinks(sessions: async_sessionmaker[AsyncSession]) -> None:
    pager = SinkConfig(name="pager", min_severity="high")
    off = SinkConfig(name="off", enabled=False)
    async with sessions.begin() as session:
        findings = [
            make_finding(severity=s, category=f"c-{s}") for s in ("low", "medium", "high", "critical")
        ]
        assert await enqueue(session, [pager, off], findings, cluster_id="c", now=NOW) == 2
        assert [r.payload["finding"]["severity"] for r in await rows(session, "pager")] == [
            "high",
            "critical",
        ]
        assert await rows(session, "off") == []


async def test_resolve_goes_to_the_sinks_that_had_the_group(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    told, untold = SinkConfig(name="told"), SinkConfig(name="untold", min_severity="critical")
    finding = make_finding(severity="high")
    async with sessions.begin() as session:
        await enqueue(session, [told, untold], [finding], cluster_id="c", now=NOW)
        assert await enqueue_resolve(session, [told, untold], finding, cluster_id="c") == ["told"]
        alert, resolve = await rows(session, "told")
        assert resolve.kind == "resolve"
        assert resolve.group_key == alert.group_key
        assert await enqueue_resolve(session, [told], finding, cluster_id="c") == []  # once


def test_group_keys() -> None:
    f = make_finding(namespace="payments", category="Crypto_Mining")
    assert group_key(f, ("category", "namespace")) == "category=Crypto_Mining|namespace=payments"
    assert group_key(f, ()) == f"finding={f.id}"
    long = make_finding(category="x" * 150, pod="p" * 100)
    assert group_key(long, ("category", "pod")).startswith("sha256:")
    with pytest.raises(ValueError, match="colour"):
        group_key(f, ("colour",))


async def test_a_finding_days_older_than_the_group_is_its_own_alert(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A node flushing days of buffered alerts, or a backfill: the old finding is not 'within the
    window' of today's group (the difference was negative, so it always was)."""
    sink = SinkConfig(name="time-old", group_window_s=300)
    now = T0 + timedelta(minutes=5)
    async with sessions.begin() as session:
        await enqueue(session, [sink], [make_finding(event_time=T0)], cluster_id="c1", now=now)
        earlier = make_finding(event_time=T0 - timedelta(minutes=2))  # within the window, before
        await enqueue(session, [sink], [earlier], cluster_id="c1", now=now)
        old = make_finding(event_time=T0 - timedelta(days=3))
        await enqueue(session, [sink], [old], cluster_id="c1", now=now)
        rows = list(
            await session.scalars(
                select(OutputQueueRow).where(OutputQueueRow.sink == sink.name).order_by(OutputQueueRow.id)
            )
        )
    assert [(r.kind, r.count) for r in rows] == [("alert", 2), ("alert", 1)]
    assert rows[0].payload["first_seen"] == (T0 - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    assert rows[1].payload["finding_ids"] == [old.id]
