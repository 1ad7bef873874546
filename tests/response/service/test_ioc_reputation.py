"""The service's CDR IOC blocklist leaves out what AbuseIPDB scores low, as once mode's
``--reputation-threshold`` does: ingest's answers (``intel_reputation``) and listings
(``ingest_intel_listed``) in the same database, real migrations of both services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qcdr_common.db import make_engine, make_session_factory
from qcdr_response.lifecycle.models import PolicyRow, PolicyVersionRow
from qcdr_response.worker import make_lifecycle
from sqlalchemy import select

from tests.response.feed_pipelines import migrated_database, run_sql
from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

BAD, LOW, LOW_LISTED, WHITELISTED, UNCHECKED = (
    "185.220.101.7",
    "45.155.205.1",
    "45.155.205.2",
    "8.8.4.4",
    "45.155.205.9",
)


@pytest.fixture(scope="module")
def database_url(base_database_url: str) -> Iterator[str]:
    with migrated_database(base_database_url, "qcdr_response_rep") as url:
        yield url


def c2(ip: str) -> Any:
    return make_finding(
        category="Reverse_Shell",
        techniques=["T1059.004"],
        process={"name": "bash", "path": "/bin/bash"},
        network={"ip": ip, "port": 4444},
    )


async def blocked(database_url: str, threshold: int) -> set[str]:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        lc = make_lifecycle(response_settings(ioc_reputation_threshold=threshold))
        async with sessions.begin() as session:
            await handle_envelopes(
                session,
                [finding_envelope(c2(ip)) for ip in (BAD, LOW, LOW_LISTED, WHITELISTED, UNCHECKED)],
                lc,
            )
        async with sessions() as session:
            body = await session.scalar(
                select(PolicyVersionRow.body)
                .join(PolicyRow, PolicyRow.id == PolicyVersionRow.policy_id)
                .where(
                    PolicyRow.name == "qualys-cdr-blocklist",
                    PolicyVersionRow.version == PolicyRow.current_version,
                )
            )
    finally:
        await engine.dispose()
    assert body is not None
    return {c["cidr"].split("/")[0] for rule in body["spec"]["egressDeny"] for c in rule.get("toCIDRSet", [])}


async def test_low_scores_are_left_out_unless_a_feed_lists_them(database_url: str) -> None:
    await run_sql(
        database_url,
        "INSERT INTO intel_reputation (ip, score, total_reports, is_whitelisted, checked_at) "
        "VALUES ($1::inet, $2, 0, $3, now())",
        (BAD, 90, False),
        (LOW, 5, False),
        (LOW_LISTED, 5, False),
        (WHITELISTED, 100, True),
    )
    await run_sql(
        database_url,
        "INSERT INTO intel_indicators (cidr, feeds, confidence) VALUES ($1::cidr, $2, 1)",
        (f"{LOW_LISTED}/32", ["feodo"]),
    )
    try:
        # checked and bad, listed by a feed whatever its score, and not checked yet: blocked
        assert await blocked(database_url, 50) == {BAD, LOW_LISTED, UNCHECKED}
        await run_sql(database_url, "TRUNCATE response_findings, response_received CASCADE")
        await run_sql(database_url, "TRUNCATE response_policies CASCADE")
        # threshold 0: reputation is not consulted
        assert await blocked(database_url, 0) == {BAD, LOW, LOW_LISTED, WHITELISTED, UNCHECKED}
    finally:
        await run_sql(database_url, "TRUNCATE intel_reputation, intel_indicators")
