"""The response migrations: ``qcdr-response db upgrade`` is idempotent, and the schema matches the models."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from qcdr_common.testing.plugin import scratch_database
from qcdr_response.cli import cli
from qcdr_response.db import VERSION_TABLE, alembic_config, upgrade
from qcdr_response.db.models import metadata
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

pytestmark = pytest.mark.db

TABLES = {
    "response_received",
    "response_findings",
    "response_policies",
    "response_policy_versions",
    "response_finding_policy",
    "response_outbox",
    "response_dns_resolve_deny",
    "response_federated_removals",
}

# the newest migration: every upgrade in these tests ends there
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def inspect_db(url: str) -> tuple[set[str], list[tuple[object, ...]]]:
    def run(connection: Connection) -> tuple[set[str], list[tuple[object, ...]]]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_name": lambda name, type_, _: type_ != "table" or name in metadata.tables,
            },
        )
        return set(inspect(connection).get_table_names()), compare_metadata(context, metadata)

    async def main() -> tuple[set[str], list[tuple[object, ...]]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_db_upgrade_is_idempotent_and_matches_the_models(
    response_database_url: str, fresh_settings: None
) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": response_database_url})
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith(f"is at revision {HEAD}")
    tables, differences = inspect_db(response_database_url)
    assert TABLES | {VERSION_TABLE} <= tables
    assert differences == []


def test_0007_marks_the_stored_findings_that_carry_indicators(base_database_url: str) -> None:
    """Findings stored before the IOC blocklist existed get the flag the handler now sets."""
    rows = {
        "verdict-with-ip": ("source", {"network": {"ip": "185.220.101.7", "port": 4444}}),
        "verdict-with-port": ("attack_technique", {"network": {"port": 4444}}),
        "verdict-domain-only": ("intel_match", {"network": {"domain": "evil.example"}}),
        "anomaly-with-ip": ("anomaly", {"network": {"ip": "185.220.101.7"}}),
        "no-network": ("chain", {}),
    }

    async def insert(url: str) -> None:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            for finding_id, (kind, payload) in rows.items():
                await connection.execute(
                    "INSERT INTO response_findings (id, kind, category, severity, event_time, namespace, "
                    "envelope_id, payload) VALUES ($1, $2, 'c', 'high', now(), '', 'e', $3::jsonb)",
                    finding_id,
                    kind,
                    json.dumps(payload),
                )
        finally:
            await connection.close()

    async def flags(url: str) -> dict[str, bool]:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            return {
                r["id"]: r["ioc"] for r in await connection.fetch("SELECT id, ioc FROM response_findings")
            }
        finally:
            await connection.close()

    with scratch_database(base_database_url, "qcdr_response_m7") as url:
        assert upgrade(url, "0006") == "0006"
        asyncio.run(insert(url))
        assert upgrade(url) == HEAD
        assert asyncio.run(flags(url)) == {
            "verdict-with-ip": True,
            "verdict-with-port": True,
            "verdict-domain-only": False,
            "anomaly-with-ip": False,
            "no-network": False,
        }
