"""Storing findings through the staging table: what is stored, what is announced, in which order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from qcdr_analysis.findings.repository import FindingRecord, finding_record, insert_findings
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import json_dumps, make_engine, make_session_factory

pytestmark = pytest.mark.db

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def finding(n: int, **overrides: object) -> Finding:
    data: dict[str, object] = {
        "id": f"finding-{n:03d}",
        "kind": "source",
        "detector": "source",
        "category": "Terminal shell in container",
        "severity": "high",
        "event_time": (T0 + timedelta(seconds=n)).isoformat(),
        "source": "falco",
        "workload": {"cluster": "prod", "namespace": "web", "pod": f"api-{n}"},
        "techniques": ["T1059.004"],
        "explanation": "a shell",
        "evidence_event_ids": [f"event-{n}"],
        **overrides,
    }
    return Finding.model_validate(data)


def record(f: Finding, position: int, *, announce: bool = True) -> FindingRecord:
    payload = json_dumps(f.model_dump(mode="json"))
    data = orjson.dumps({"id": f"env-{f.id}", "payload": f.model_dump(mode="json")}) if announce else None
    return finding_record(f, payload, envelope_id=f"env-{f.id}", data=data, position=position)


async def rows(db: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def store(db: str, *batches: list[FindingRecord]) -> list[set[str]]:
    """Each batch through insert_findings, all in one transaction."""
    engine = make_engine(db)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            return [
                await insert_findings(session, batch, stream="analysis:findings", envelope_type="t")
                for batch in batches
            ]
    finally:
        await engine.dispose()


async def test_columns_payload_and_envelope_are_stored(db: str) -> None:
    f = finding(1, severity="critical")
    assert await store(db, [record(f, 0)]) == [{f.id}]
    (row,) = await rows(db, "SELECT * FROM analysis_findings")
    assert (row["id"], row["kind"], row["severity"], row["severity_rank"]) == (f.id, "source", "critical", 4)
    assert (row["namespace"], row["cluster"], row["source"]) == ("web", "prod", "falco")
    assert (row["techniques"], row["evidence_event_ids"]) == (["T1059.004"], ["event-1"])
    assert row["event_time"] == f.event_time
    assert orjson.loads(row["payload"]) == f.model_dump(mode="json")
    (out,) = await rows(db, "SELECT * FROM analysis_outbox")
    assert (out["envelope_id"], out["stream"], out["type"]) == ("env-finding-001", "analysis:findings", "t")
    assert orjson.loads(out["data"])["payload"]["id"] == f.id


async def test_a_known_id_is_neither_stored_nor_announced_again(db: str) -> None:
    first, second = finding(1), finding(2)
    assert await store(db, [record(first, 0)]) == [{first.id}]
    # the second call of one transaction sees only its own batch in the staging table
    assert await store(db, [record(first, 0), record(second, 1)], [record(second, 0)]) == [{second.id}, set()]
    assert [r["id"] for r in await rows(db, "SELECT id FROM analysis_findings ORDER BY id")] == [
        first.id,
        second.id,
    ]
    assert len(await rows(db, "SELECT 1 FROM analysis_outbox")) == 2


async def test_envelopes_follow_the_order_findings_were_raised_in(db: str) -> None:
    raised = [finding(n) for n in (5, 1, 9, 3)]  # not in id order
    await store(db, [record(f, i) for i, f in enumerate(raised)])
    published = await rows(db, "SELECT envelope_id FROM analysis_outbox ORDER BY id")
    assert [r["envelope_id"] for r in published] == [f"env-{f.id}" for f in raised]


async def test_findings_without_data_are_stored_unannounced(db: str) -> None:
    quiet, loud = finding(1), finding(2)
    await store(db, [record(quiet, 0, announce=False), record(loud, 1)])
    assert len(await rows(db, "SELECT 1 FROM analysis_findings")) == 2
    assert [r["envelope_id"] for r in await rows(db, "SELECT envelope_id FROM analysis_outbox")] == [
        "env-finding-002"
    ]
