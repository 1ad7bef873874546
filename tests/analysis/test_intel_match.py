"""intel_match against ingest's real view (``ingest_intel_listed``) and reputation cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from qcdr_analysis.findings.service import DetectorSet
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.db import make_engine, make_session_factory
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.analysis.conftest import make_event, tetragon_event

pytestmark = pytest.mark.db

# Confidence as ingest computes it: the number of live listings (IPsum adds its own list count).
LISTED = [
    ("198.51.100.0/24", ["feodo", "spamhaus-drop"], 2),
    ("198.51.100.7/32", ["ipsum"], 1),  # overlaps the /24: feeds merge, highest confidence wins
    ("203.0.113.5/32", ["blocklist-de"], 1),
    ("2001:db8:bad::/48", ["firehol-level1"], 1),
]
REPUTATION = [("192.0.2.10", 95), ("192.0.2.11", 20), ("198.51.100.7", 85)]


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db)
    async with engine.begin() as conn:
        for cidr, feeds, confidence in LISTED:
            await conn.execute(
                text(
                    "INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES (CAST(:c AS cidr), :f, :n)"
                ),
                {"c": cidr, "f": feeds, "n": confidence},
            )
        for ip, score in REPUTATION:
            await conn.execute(
                text(
                    "INSERT INTO intel_reputation (ip, score, total_reports, checked_at)"
                    " VALUES (CAST(:ip AS inet), :s, 3, :t)"
                ),
                {"ip": ip, "s": score, "t": datetime.now(UTC)},
            )
    yield engine
    await engine.dispose()


def to(ip: str, **overrides: Any) -> Any:
    return make_event(network={"ip": ip, "port": 443}, **overrides)


async def run(engine: AsyncEngine, events: list[Any], configs: dict[str, Any] | None = None) -> list[Finding]:
    detectors = DetectorSet.configure(configs or {}, disabled={"source", "attack_rules"})
    async with make_session_factory(engine).begin() as session:
        return await detectors.run(session, events)


async def test_listed_and_bad_reputation_destinations_become_one_finding_each(engine: AsyncEngine) -> None:
    listed = to("198.51.100.20")
    both = to("198.51.100.7")
    single = to("203.0.113.5")
    bad_reputation = to("192.0.2.10")
    fine_reputation = to("192.0.2.11")
    clean = to("192.0.2.99")
    v6 = to("2001:db8:bad::1")
    no_network = make_event()
    events = [
        listed,
        both,
        single,
        bad_reputation,
        fine_reputation,
        clean,
        v6,
        no_network,
        to("198.51.100.20"),
    ]
    findings = {f.evidence_event_ids[0]: f for f in await run(engine, events)}
    assert set(findings) == {listed.id, both.id, single.id, bad_reputation.id, v6.id, events[-1].id}

    f = findings[listed.id]
    assert f.kind is FindingKind.INTEL_MATCH
    assert f.detector == "intel_match"
    assert f.category == "networking_c2_communication"
    assert f.severity is Severity.HIGH  # listed twice: at the high_listing_confidence of 2
    assert set(f.techniques) == {"T1059", "T1071"}  # the event's own, and the configured one
    assert f.attributes == {
        "ip": "198.51.100.20",
        "feeds": ["feodo", "spamhaus-drop"],
        "confidence": 2,
        "reputation": None,
    }
    assert f.title == "Connection to 198.51.100.20 (listed by feodo, spamhaus-drop)"
    assert findings[both.id].attributes == {
        "ip": "198.51.100.7",
        "feeds": ["feodo", "ipsum", "spamhaus-drop"],
        "confidence": 2,
        "reputation": 85,
    }
    assert findings[single.id].severity is Severity.MEDIUM  # one listing, no reputation
    assert findings[bad_reputation.id].attributes["reputation"] == 95
    assert findings[bad_reputation.id].attributes["feeds"] == []
    assert "reputation 95" in findings[bad_reputation.id].title
    assert findings[v6.id].attributes["feeds"] == ["firehol-level1"]


async def test_threshold_and_reputation_switch(engine: AsyncEngine) -> None:
    events = [to("192.0.2.11"), to("192.0.2.10"), to("198.51.100.20")]
    low = await run(engine, events, {"intel_match": {"reputation_threshold": 10}})
    assert {f.attributes["ip"] for f in low} == {"192.0.2.11", "192.0.2.10", "198.51.100.20"}
    listed_only = await run(engine, events, {"intel_match": {"reputation_table": None}})
    assert {f.attributes["ip"] for f in listed_only} == {"198.51.100.20"}


async def test_tetragon_connect_without_normalized_destination(engine: AsyncEngine) -> None:
    raw = {
        "process_connect": {
            "process": {"binary": "/tmp/implant", "pod": {"namespace": "shop", "name": "web-1"}},
            "destination_ip": "203.0.113.5",
            "destination_port": 443,
        }
    }
    (finding,) = await run(engine, [tetragon_event(raw)])
    assert finding.network is not None
    assert str(finding.network.ip) == "203.0.113.5"
    assert finding.workload.namespace == "shop"


async def test_one_query_per_batch(engine: AsyncEngine) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    detectors = DetectorSet.configure({}, disabled={"source", "attack_rules"})
    listed = [to(f"198.51.100.{i % 250}") for i in range(300)]
    events = listed + [to(f"192.0.2.{i % 200}") for i in range(300)]  # .10 (twice) is bad
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            async with make_session_factory(engine).begin() as session:
                found = await detectors.run(session, events)
            assert len(found) == 300 + 2
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    lookups = [s for s in statements if "ingest_intel_listed" in s]
    checks = [s for s in statements if "to_regclass" in s]
    assert len(lookups) == 3  # one per batch of 600 events
    assert len(checks) == 1  # which relations exist: once, then cached


async def test_missing_view_means_no_findings_not_an_error(engine: AsyncEngine) -> None:
    findings = await run(engine, [to("198.51.100.20")], {"intel_match": {"listed_view": "no_such_view"}})
    assert [f.attributes["ip"] for f in findings] == []  # reputation 85 only for .7; .20 has none


async def test_a_failing_lookup_skips_only_that_detector(engine: AsyncEngine) -> None:
    # a relation that exists but has no ``ip``/``score`` columns: the lookup query fails
    detectors = DetectorSet.configure({"intel_match": {"reputation_table": "analysis_received"}})
    listed = to("198.51.100.20", source="qualys", category="Network_C2")
    async with make_session_factory(engine).begin() as session:
        findings = await detectors.run(session, [listed])
        # the savepoint rolled back: the transaction is still usable
        assert (await session.execute(text("SELECT 1"))).scalar() == 1
    assert [f.detector for f in findings] == ["source"]


async def test_a_connection_close_does_not_repeat_the_connect(engine: AsyncEngine) -> None:
    body = {
        "process": {"binary": "/usr/bin/nc", "pod": {"namespace": "shop", "name": "web-1"}},
        "destination_ip": "203.0.113.5",
        "destination_port": 443,
    }
    connect = tetragon_event({"process_connect": body})
    close = tetragon_event({"process_close": body})
    assert [f.evidence_event_ids for f in await run(engine, [connect, close])] == [(connect.id,)]
