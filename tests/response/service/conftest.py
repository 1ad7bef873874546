"""Fixtures for the response service tests: a migrated database, rolled-back sessions, factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from itertools import count
from typing import Any

import asyncpg
import pytest
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.db import make_engine
from qcdr_common.streams.envelope import Envelope, new_envelope
from qcdr_common.testing.plugin import scratch_database
from qcdr_response.db import upgrade
from qcdr_response.lifecycle.service import BatchOutcome, Lifecycle, handle_findings, parse_findings
from qcdr_response.settings import ResponseSettings, get_settings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = count(1)


@pytest.fixture(scope="module")
def response_database_url(base_database_url: str) -> Iterator[str]:
    """A migrated database of this module's own for rolled-back sessions: tests that count rows
    must not see what another module committed into a shared database."""
    with scratch_database(base_database_url, "qcdr_response_s") as url:
        upgrade(url)
        yield url


@pytest.fixture
async def sessions(response_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions inside one outer transaction rolled back at the end: commits become savepoint
    releases, so every test leaves the shared database as it found it."""
    engine = make_engine(response_database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            outer = await connection.begin()
            yield async_sessionmaker(
                bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            await outer.rollback()
    finally:
        await engine.dispose()


RESPONSE_TABLES = (
    "response_output_queue",
    "response_output_dead_letters",
    "response_action_audit",
    "response_actions",
    "response_finding_policy",
    "response_policy_versions",
    "response_policies",
    "response_findings",
    "response_received",
    "response_outbox",
    "response_dns_resolve_deny",
    "response_pipeline_written",
    "response_federated_removals",
)


@pytest.fixture(scope="module")
def committed_database_url(base_database_url: str) -> Iterator[str]:
    """A migrated database of this module's own, for tests whose code commits for real (the app,
    the worker, subprocesses); ``committed_db`` empties it after each test."""
    with scratch_database(base_database_url, "qcdr_response") as url:
        upgrade(url)
        yield url


@pytest.fixture
async def committed_db(committed_database_url: str) -> AsyncIterator[str]:
    yield committed_database_url
    connection = await asyncpg.connect(committed_database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(f"TRUNCATE {', '.join(RESPONSE_TABLES)} RESTART IDENTITY")
    finally:
        await connection.close()


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def make_finding(**overrides: Any) -> Finding:
    """A Falco-like shell-in-container finding in namespace ``payments`` (override anything)."""
    n = next(_ids)
    data: dict[str, Any] = {
        "id": f"finding-{n:06d}",
        "kind": "source",
        "detector": "falco",
        "category": "Network_Scanning_Utility",
        "severity": "high",
        "techniques": ["T1046"],
        "title": "nmap run in a container",
        "event_time": T0,
        "evidence_event_ids": [f"event-{n}"],
        "workload": {"namespace": "payments", "pod": "api-7d9f-x2", "container": "api"},
        "process": {"name": "nmap", "path": "/usr/bin/nmap"},
        "source": "falco",
    }
    for key, value in overrides.items():
        if key in {"namespace", "pod", "container"}:
            data["workload"] = {**data["workload"], key: value}
        else:
            data[key] = value
    return Finding.model_validate(data)


def finding_envelope(finding: Finding, **kwargs: Any) -> Envelope:
    return new_envelope(
        "analysis.finding_raised",
        finding,
        source="analysis",
        cluster_id="test",
        occurred_at=finding.event_time,
        **kwargs,
    )


def response_settings(**overrides: Any) -> ResponseSettings:
    """Settings from arguments only (no environment file); the stream tuning is test-fast."""
    values: dict[str, Any] = {
        "consume_in_app": False,
        "stream_block_ms": 50,
        "stream_claim_idle_ms": 200,
        "outbox_poll_s": 0.02,
        "consumer_name": "test-consumer",
    }
    values.update(overrides)
    return ResponseSettings(_env_file=None, **values)


async def handle_envelopes(
    session: AsyncSession, envelopes: Sequence[Envelope], lc: Lifecycle
) -> BatchOutcome:
    """Parse (all must be well-formed) and handle envelopes in the caller's transaction."""
    parsed, malformed = parse_findings(envelopes)
    assert malformed == []
    return await handle_findings(session, parsed, lc)
