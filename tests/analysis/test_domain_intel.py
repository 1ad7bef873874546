"""``domain_intel`` against ingest's real view: a DNS query for a listed name (or a name under a
listed parent) is a finding; other names and names only sharing a public suffix are not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from qcdr_analysis.detectors import domain_intel
from qcdr_analysis.findings.service import DetectorSet
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.db import make_engine, make_session_factory
from qcdr_ingest.dns.queries import convert_dns
from sqlalchemy.ext.asyncio import AsyncEngine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    connection = await asyncpg.connect(db.replace("+asyncpg", ""))
    try:
        await connection.executemany(
            "INSERT INTO intel_domains (domain, feeds, categories) VALUES ($1, $2, $3)",
            [
                ("evil.example", ["maltrail"], ["malware"]),
                ("ads.test", ["hosts"], []),
                ("com", ["broken-feed"], []),  # a feed listing a public suffix must not match all .com
            ],
        )
    finally:
        await connection.close()
    engine = make_engine(db)
    yield engine
    await engine.dispose()


def query(name: str, n: int) -> Any:
    return convert_dns(
        {
            "time": (T0 + timedelta(seconds=n)).isoformat(),
            "query": name,
            "workload": {"namespace": "shop", "pod": "api-1"},
        },
        "prod",
    )


async def test_listed_names_and_their_subdomains_are_findings(engine: AsyncEngine) -> None:
    names = set(DetectorSet.configure().names)
    detectors = DetectorSet.configure(disabled=names - {"domain_intel"})
    events = [
        query("evil.example", 1),
        query("cdn.x.evil.example", 2),
        query("ads.test", 3),
        query("github.com", 4),
    ]
    async with make_session_factory(engine).begin() as session:
        findings = await detectors.run(session, events)
    by_domain = {f.attributes["domain"]: f for f in findings}
    assert set(by_domain) == {"evil.example", "cdn.x.evil.example", "ads.test"}
    evil = by_domain["cdn.x.evil.example"]
    assert evil.attributes["listed"] == "evil.example"
    assert evil.severity is Severity.HIGH  # a malware category
    assert evil.category == "dns.malicious_domain"
    assert "under listed evil.example by maltrail" in evil.explanation
    assert by_domain["ads.test"].severity is Severity.MEDIUM
    assert domain_intel.candidates("a.b.evil.co.uk") == ["a.b.evil.co.uk", "b.evil.co.uk", "evil.co.uk"]
