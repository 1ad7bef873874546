"""The ``consume`` and ``replay`` hooks of the shared service CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog
from qcdr_common.service_cli import make_service_cli
from qcdr_common.settings import CommonSettings
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The commands configure structlog to print to the stderr CliRunner swaps in and then closes."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def settings() -> CommonSettings:
    return CommonSettings(log_format="console", consume_metrics_port=0)


def test_consume_and_replay_are_added_only_when_given() -> None:
    bare = CliRunner().invoke(make_service_cli("svc", "x:y", settings), ["--help"])
    assert bare.exit_code == 0
    assert "consume" not in bare.output
    assert "replay" not in bare.output


def test_consume_runs_the_hook_and_reports_failure_with_exit_code_1() -> None:
    ran: list[str] = []

    async def consume() -> None:
        ran.append("consume")

    cli = make_service_cli("svc", "x:y", settings, consume=consume)
    result = CliRunner().invoke(cli, ["consume"])
    assert result.exit_code == 0, result.output
    assert ran == ["consume"]

    async def broken() -> None:
        raise RuntimeError("redis://user:secret@host/0 unreachable")

    result = CliRunner().invoke(make_service_cli("svc", "x:y", settings, consume=broken), ["consume"])
    assert result.exit_code == 1
    assert "secret" not in result.output


def test_replay_passes_since_as_an_aware_datetime() -> None:
    seen: list[datetime | None] = []

    async def replay(since: datetime | None) -> int:
        seen.append(since)
        return 42

    cli = make_service_cli("svc", "x:y", settings, replay=replay)
    runner = CliRunner()
    result = runner.invoke(cli, ["replay", "--since", "2026-03-01T12:00:00"])
    assert result.exit_code == 0, result.output
    assert "re-published 42" in result.output
    result = runner.invoke(cli, ["replay"])
    assert result.exit_code == 0, result.output
    assert seen == [datetime(2026, 3, 1, 12, tzinfo=UTC), None]
