"""One odd value costs its own item, never the batch, the poll or the service: found in a review of
ingest (2026-12-06), each test failed before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from qcdr_common import service_cli
from qcdr_ingest.app import create_app
from qcdr_ingest.cli import cli
from qcdr_ingest.intel.abuseipdb import AbuseIPDBSettings
from qcdr_ingest.intel.feeds import FeedConfigError
from qcdr_ingest.settings import get_qualys_settings, get_settings
from typer.testing import CliRunner

from tests.ingest.service.conftest import MakeClient

pytestmark = [pytest.mark.db, pytest.mark.redis]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def connection(n: int, remote_ip: str) -> dict[str, Any]:
    return {
        "time": f"2026-01-01T00:00:0{n}Z",
        "rule": "Outbound connection",
        "priority": "Warning",
        "output": f"connection {n}",
        "output_fields": {"fd.rip": remote_ip, "fd.rport": 443},
    }


async def test_an_ipv6_zone_costs_nothing(make_client: MakeClient, db: asyncpg.Connection) -> None:
    """PostgreSQL's inet refuses "2001:db8::7%eth0" (Python's ipaddress takes it): the reputation
    queue's insert failed and the whole batch was refused with 422. The zone names an interface of
    the node that saw it, so the address is kept without it."""
    abuseipdb = AbuseIPDBSettings(_env_file=None, api_key=SecretStr("k" * 80), base_url="http://127.0.0.1:9")
    async with make_client(abuseipdb=abuseipdb) as (client, _):
        response = await client.post(
            "/v1/events/falco", json=[connection(1, "203.0.113.7"), connection(2, "2001:db8::7%eth0")]
        )
    assert response.status_code == 202, response.text
    assert response.json()["stored"] == 2
    stored = await db.fetch("SELECT payload->'network'->>'ip' AS ip FROM ingest_events ORDER BY 1")
    assert [r["ip"] for r in stored] == ["2001:db8::7", "203.0.113.7"]


def test_a_bad_feeds_file_fails_the_app_not_the_first_dns_verdict(
    make_client: MakeClient, make_ingest_settings: Any, tmp_path: Path
) -> None:
    """The DNS verdict read the feeds file on its first request: a mistake was a 500 on every
    verdict instead of one line at start-up."""
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text("- {name: x, url: 'https://x.example/a', category: c, min_interval: 99999999999999d}\n")
    with pytest.raises(FeedConfigError, match=f"{feeds}: .*min_interval.*at most 100 years"):
        create_app(make_ingest_settings(intel_feeds_file=feeds))


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    get_qualys_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_qualys_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("QUALYS_PLATFORM", "bogus", "platform"),
        ("QCDR_INTEL_FEEDS_FILE", "/nonexistent/feeds.yaml", "/nonexistent/feeds.yaml: cannot read"),
    ],
)
def test_serve_names_a_bad_setting_in_one_line(
    variable: str, value: str, reason: str, ingest_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in the lifespan, QUALYS_* was a pydantic traceback and exit 3."""
    monkeypatch.setenv("DATABASE_URL", ingest_database_url)
    monkeypatch.setenv("QCDR_API_TOKEN", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv(variable, value)

    def started(*_: object, **__: object) -> None:
        raise AssertionError("the server started: the mistake was not caught when the app was built")

    monkeypatch.setattr(service_cli.uvicorn, "run", started)
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("qcdr-ingest serve: configuration error: ")
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
