"""Every service's retention rules against its own migrated schema: each table and time column is
there, each age rule reads an index that starts with its column (a pass never scans a table of
events), and a pass runs. The deletion itself is tested in tests/common/test_retention.py; here
ingest's events go end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_admission.app import retention_rules as admission_rules
from qcdr_admission.db import upgrade as admission_upgrade
from qcdr_admission.settings import AdmissionSettings
from qcdr_analysis.db import upgrade as analysis_upgrade
from qcdr_analysis.settings import AnalysisSettings
from qcdr_analysis.worker import retention_rules as analysis_rules
from qcdr_common.db import make_engine
from qcdr_common.retention import AgeRule, OutboxRule, Rule, prune
from qcdr_common.testing.plugin import scratch_database
from qcdr_federation.db import upgrade as federation_upgrade
from qcdr_federation.hub.install import hub_retention_rules
from qcdr_federation.settings import FederationSettings
from qcdr_ingest.db import upgrade as ingest_upgrade
from qcdr_ingest.settings import IngestSettings
from qcdr_ingest.workers import retention_rules as ingest_rules
from qcdr_response.db import upgrade as response_upgrade
from qcdr_response.worker import retention_rules as response_rules
from sqlalchemy import text

from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db]

SERVICES: dict[str, tuple[Callable[[str], Any], Callable[[], Sequence[Rule]]]] = {
    "ingest": (ingest_upgrade, lambda: ingest_rules(IngestSettings())),
    "analysis": (analysis_upgrade, lambda: analysis_rules(AnalysisSettings())),
    "response": (response_upgrade, lambda: response_rules(response_settings())),
    "admission": (admission_upgrade, lambda: admission_rules(AdmissionSettings())),
    "federation": (federation_upgrade, lambda: hub_retention_rules(FederationSettings(_env_file=None))),
}


async def leading_index_columns(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
                    "WHERE c.relname = :t"
                ),
                {"t": table},
            )
            return {str(r[0]) for r in rows}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_rules_fit_the_schema(service: str, base_database_url: str) -> None:
    upgrade, rules = SERVICES[service]
    chosen = list(rules())
    assert any(isinstance(rule, OutboxRule) for rule in chosen)
    with scratch_database(base_database_url, f"qcdr_retention_{service}") as url:
        upgrade(url)
        for rule in chosen:
            if isinstance(rule, AgeRule):
                assert rule.keep_s > 0, f"{rule.table}: kept for good by default"
                assert rule.column in asyncio.run(leading_index_columns(url, rule.table)), rule

        async def one_pass() -> dict[str, int] | None:
            engine = make_engine(url)
            try:
                return await prune(engine, chosen, service=f"test-{service}")
            finally:
                await engine.dispose()

        assert asyncio.run(one_pass()) == {}


def test_old_events_leave_ingest(base_database_url: str) -> None:
    now = datetime.now(UTC)
    with scratch_database(base_database_url, "qcdr_retention_events") as url:
        ingest_upgrade(url)

        async def scenario() -> list[str]:
            engine = make_engine(url)
            try:
                async with engine.begin() as conn:
                    for event_id, age in (("old", 31), ("recent", 29)):
                        await conn.execute(
                            text(
                                "INSERT INTO ingest_events (id, source, category, severity, event_time,"
                                " payload, received_at) VALUES (:id, 'falco', 'c', 'high', :t, '{}', now())"
                            ),
                            {"id": event_id, "t": now - timedelta(days=age)},
                        )
                deleted = await prune(engine, ingest_rules(IngestSettings()), service="test-ingest-events")
                assert deleted == {"ingest_events": 1}
                async with engine.connect() as conn:
                    return [str(r[0]) for r in await conn.execute(text("SELECT id FROM ingest_events"))]
            finally:
                await engine.dispose()

        assert asyncio.run(scenario()) == ["recent"]
