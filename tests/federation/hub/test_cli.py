"""``qcdr-federation`` hub admin commands, straight against the database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from qcdr_federation.cli import cli
from qcdr_federation.hub.spoke_auth import sha256
from qcdr_federation.settings import get_settings
from typer.testing import CliRunner

from tests.federation.conftest import truncate_federation_tables

pytestmark = [pytest.mark.db]


@pytest.fixture
def env(federation_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    asyncio.run(truncate_federation_tables(federation_database_url))
    monkeypatch.setenv("DATABASE_URL", federation_database_url)
    monkeypatch.delenv("QCDR_FEDERATION_ROLE", raising=False)
    get_settings.cache_clear()
    yield federation_database_url
    get_settings.cache_clear()


def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    async def main() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(main())


def test_declare_list_and_bootstrap_token(env: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["clusters", "list"])
    assert result.exit_code == 0
    assert "no clusters" in result.output

    result = runner.invoke(cli, ["clusters", "declare", "eu-1", "--label", "env=prod", "-l", "region=eu"])
    assert result.exit_code == 0, result.output
    assert "cluster eu-1 declared" in result.output
    result = runner.invoke(cli, ["clusters", "list"])
    assert result.exit_code == 0
    assert "eu-1\tpending\tenv=prod,region=eu\tlast heartbeat never" in result.output

    result = runner.invoke(cli, ["bootstrap-token", "create", "eu-1", "--ttl", "2h"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    [row] = fetch(
        env,
        "SELECT cluster_name, sha256, source, expires_at - created_at AS ttl"
        " FROM federation_bootstrap_tokens",
    )
    assert row["cluster_name"] == "eu-1"
    assert bytes(row["sha256"]) == sha256(token)
    assert row["source"] == "cli"
    assert row["ttl"].total_seconds() == 7200
    [cluster] = fetch(env, "SELECT labels, source FROM federation_clusters")
    assert cluster["source"] == "cli"


@pytest.mark.parametrize(
    "args",
    [
        ["clusters", "declare", "Bad_Name"],
        ["clusters", "declare", "eu-1", "--label", "novalue"],
        ["clusters", "declare", "eu-1", "--label", "-bad=x"],
        ["bootstrap-token", "create", "eu-1", "--ttl", "forever"],
        ["bootstrap-token", "create", "eu-1", "--ttl", "0"],
        ["bootstrap-token", "create", "eu-1", "--ttl", "31d"],  # the API's limit: 30 days
        ["bootstrap-token", "create", "eu-1", "--ttl", "999999999d"],  # was an OverflowError traceback
        ["bootstrap-token", "create", "Bad_Name"],  # was a cluster row no spoke can register as
    ],
)
def test_bad_arguments_exit_2(env: str, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert fetch(env, "SELECT name FROM federation_clusters") == []


def test_a_ttl_is_capped_like_the_api(env: str) -> None:
    refused = CliRunner().invoke(cli, ["bootstrap-token", "create", "eu-1", "--ttl", "2592001"])
    assert refused.exit_code == 2
    assert "--ttl: at most 30d" in refused.stderr
    accepted = CliRunner().invoke(cli, ["bootstrap-token", "create", "eu-1", "--ttl", "30d"])
    assert accepted.exit_code == 0, accepted.output
    [row] = fetch(env, "SELECT expires_at - created_at AS ttl FROM federation_bootstrap_tokens")
    assert row["ttl"].total_seconds() == 30 * 86_400


@pytest.mark.parametrize(
    "args", [["clusters", "list"], ["clusters", "declare", "eu-1"], ["bootstrap-token", "create", "eu-1"]]
)
def test_a_database_that_cannot_be_used_is_one_line(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://qcdr:pw-not-shown@127.0.0.1:9/qcdr")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"qcdr-federation {' '.join(args[:2])}: cannot use the database at ")
    assert "127.0.0.1:9" in line
    assert "pw-not-shown" not in result.output


def test_bad_settings_are_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCDR_FEDERATION_ROLE", "captain")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["clusters", "list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "qcdr-federation clusters list: configuration error: QCDR_FEDERATION_ROLE" in result.stderr


def test_db_upgrade_and_replay_are_there(env: str) -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "is at revision" in result.output
    result = CliRunner().invoke(cli, ["--help"])
    assert "replay" in result.output
    assert "clusters" in result.output
    assert "bootstrap-token" in result.output
