"""The events handler: one transaction per batch, exactly-once effects, poison isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import orjson
import pytest
from qcdr_analysis.findings.handlers import EventsHandler, PoisonEnvelopeError
from qcdr_analysis.findings.service import BatchOutcome, DetectorSet
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.streams import Delivery, Envelope, new_envelope
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import event_envelope, make_event, tetragon_event

pytestmark = pytest.mark.db

NSENTER = {
    "process_exec": {
        "process": {
            "binary": "/usr/bin/nsenter",
            "arguments": "-t 1 -m -u -n -i -p bash",
            "pod": {"namespace": "default", "name": "privileged-pod"},
        }
    }
}
BENIGN = {
    "process_exec": {"process": {"binary": "/usr/sbin/nginx", "pod": {"namespace": "web", "name": "x"}}}
}


@dataclass
class Counts:
    findings: int
    outbox: int
    received: int


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    yield engine
    await engine.dispose()


async def counts(db: str) -> Counts:
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM analysis_findings), (SELECT count(*) FROM analysis_outbox),"
            " (SELECT count(*) FROM analysis_received)"
        )
    finally:
        await conn.close()
    assert row is not None
    return Counts(*row)


def deliveries(envelopes: list[Envelope], times: int = 1) -> list[Delivery]:
    return [Delivery(f"{i + 1}-0", env, times) for i, env in enumerate(envelopes)]


def handler_for(engine: AsyncEngine, outcomes: list[BatchOutcome] | None = None) -> EventsHandler:
    def after(outcome: BatchOutcome) -> None:
        if outcomes is not None:
            outcomes.append(outcome)

    return EventsHandler(
        make_session_factory(engine), DetectorSet.configure(), cluster_id="test", after_commit=after
    )


async def test_a_redelivered_batch_changes_nothing(db: str, engine: AsyncEngine) -> None:
    events = [
        make_event(source="qualys", category="Container_Escape", severity="critical", techniques=["T1611"]),
        make_event(source="falco"),
        tetragon_event(NSENTER),
        tetragon_event(BENIGN),
    ]
    envelopes = [event_envelope(e) for e in events]
    outcomes: list[BatchOutcome] = []
    handler = handler_for(engine, outcomes)

    await handler(deliveries(envelopes))
    assert await counts(db) == Counts(findings=3, outbox=3, received=4)
    assert outcomes[-1].outbox_rows == 3

    await handler(deliveries(envelopes, times=2))  # a crash between commit and XACK
    assert await counts(db) == Counts(findings=3, outbox=3, received=4)
    assert (outcomes[-1].duplicates, outcomes[-1].outbox_rows) == (4, 0)

    # the same events in new envelopes (a producer published them again): new envelope ids are
    # recorded, the findings are deduplicated by their deterministic ids
    await handler(deliveries([event_envelope(e) for e in events]))
    assert await counts(db) == Counts(findings=3, outbox=3, received=8)
    assert (outcomes[-1].duplicates, outcomes[-1].findings, outcomes[-1].outbox_rows) == (0, 3, 0)


async def test_outbox_rows_carry_the_finding_and_the_causal_chain(db: str, engine: AsyncEngine) -> None:
    event = tetragon_event(NSENTER)
    cause = event_envelope(event, correlation_id="corr-1")
    await handler_for(engine)([Delivery("1-0", cause, 1)])
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        finding_row = await conn.fetchrow("SELECT * FROM analysis_findings")
        outbox_row = await conn.fetchrow("SELECT * FROM analysis_outbox")
    finally:
        await conn.close()
    assert finding_row is not None
    assert outbox_row is not None
    envelope = Envelope.from_json(outbox_row["data"])
    assert (outbox_row["stream"], outbox_row["type"]) == ("analysis:findings", "analysis.finding_raised")
    assert envelope.id == outbox_row["envelope_id"] == finding_row["envelope_id"]
    assert (envelope.type, envelope.source, envelope.cluster_id) == (
        "analysis.finding_raised",
        "analysis",
        "test",
    )
    assert (envelope.correlation_id, envelope.causation_id) == ("corr-1", cause.id)
    finding = Finding.model_validate(envelope.payload)
    assert finding.model_dump(mode="json") == orjson.loads(finding_row["payload"])
    assert finding.evidence_event_ids == (event.id,)
    assert (finding_row["kind"], finding_row["severity"], finding_row["severity_rank"]) == (
        "attack_technique",
        "critical",
        4,
    )
    assert finding_row["namespace"] == "default"
    assert finding_row["techniques"] == ["T1611"]
    assert envelope.occurred_at == event.event_time


async def test_concurrent_deliveries_of_one_batch_yield_one_set_of_effects(
    db: str, engine: AsyncEngine
) -> None:
    """Two consumers with the same entries (one claimed them from the other, which was only slow)."""
    events = [make_event(source="falco") for _ in range(200)] + [tetragon_event(NSENTER) for _ in range(50)]
    envelopes = [event_envelope(e) for e in events]
    first, second = handler_for(engine), handler_for(engine)
    await asyncio.gather(first(deliveries(envelopes)), second(deliveries(list(reversed(envelopes)), 2)))
    assert await counts(db) == Counts(findings=250, outbox=250, received=250)


async def test_poison_fails_only_itself(db: str, engine: AsyncEngine) -> None:
    good = event_envelope(make_event(source="falco"))
    not_an_event = new_envelope(
        "ingest.event_observed",
        {"not": "an event"},
        source="ingest",
        cluster_id="test",
        occurred_at=good.occurred_at,
    )
    future_version = event_envelope(make_event(source="falco"), version=2)
    other_type = new_envelope(
        "ingest.something_new", {"x": 1}, source="ingest", cluster_id="test", occurred_at=good.occurred_at
    )
    handler = handler_for(engine)
    with pytest.raises(PoisonEnvelopeError) as raised:
        await handler(deliveries([good, not_an_event, future_version, other_type]))
    assert [envelope_id for envelope_id, _ in raised.value.problems] == [not_an_event.id, future_version.id]
    assert "payload is not a SecurityEvent" in str(raised.value)
    assert "version 2 is unsupported" in str(raised.value)
    # the good event was committed before the handler raised; the unknown type is recorded
    assert await counts(db) == Counts(findings=1, outbox=1, received=2)
    # the consumer's one-by-one retry: the good one is a no-op, the poison fails again
    await handler([Delivery("1-0", good, 2)])
    with pytest.raises(PoisonEnvelopeError):
        await handler([Delivery("2-0", not_an_event, 2)])
    assert await counts(db) == Counts(findings=1, outbox=1, received=2)
