"""Logging configuration from user input: URLs lose their user-info whatever the password holds,
and an unknown log level is one line, not a KeyError from structlog."""

from __future__ import annotations

import socket

import pytest
from qcdr_common.logging import configure_logging, redact_url
from qcdr_common.service_cli import make_service_cli
from qcdr_common.settings import CommonSettings
from typer.testing import CliRunner

from qcdr.cli import app


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # base64 passwords (openssl rand -base64) hold "/", "+" and "="; the pattern stopped at "/"
        ("postgresql+asyncpg://qcdr:Zk3/q9+XvB0aR7Lm==@db.internal:5432/qcdr", "db.internal:5432/qcdr"),
        ("redis://:p@ss/w@rd@cache:6379/0", "cache:6379/0"),
        ("https://user:secret@example.com/path?token=abc", "example.com/path?***"),
        ("https://hooks.example.com/services/T0/B0", "hooks.example.com/services/T0/B0"),
        ("https://api.example.com/search?q=a@b.example", "api.example.com/search?***"),
    ],
)
def test_urls_lose_their_user_info_and_query(url: str, shown: str) -> None:
    redacted = redact_url(url)
    assert redacted.endswith(shown)
    for secret in ("Zk3", "q9+X", "p@ss", "w@rd", "secret", "token=abc"):
        assert secret not in redacted


def test_db_upgrade_never_prints_a_password_with_a_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "Zk3/q9+XvB0aR7Lm=="
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://qcdr:{password}@db.internal:5432/qcdr")
    cli = make_service_cli("svc", "x:y", lambda: CommonSettings(), db_upgrade=lambda url, rev: rev)
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "***@db.internal:5432/qcdr is at revision head" in result.output
    assert password not in result.output
    assert "Zk3" not in result.output


def test_an_unknown_level_is_a_value_error_naming_the_levels() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose': use one of DEBUG, INFO, WARNING"):
        configure_logging("verbose")
    configure_logging("warning")  # any case


def test_qcdr_refuses_an_unknown_log_level_as_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["--log-level", "verbose", "intel", "--help"])
    assert result.exit_code == 2
    assert "unknown log level 'verbose'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["consume"], ["replay"]])
def test_service_commands_name_an_unknown_level_in_one_line(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QCDR_LOG_LEVEL", "verbose")

    async def consume() -> None:
        return None

    async def replay(_: object) -> int:
        return 0

    cli = make_service_cli("svc", "x:y", lambda: CommonSettings(), consume=consume, replay=replay)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"qcdr-svc {command[0]}: configuration error: log_level: ")
    assert len(result.stderr.strip().splitlines()) == 1


async def _consume() -> None:
    return None


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_consume_refuses_a_metrics_port_out_of_range(port: str) -> None:
    cli = make_service_cli("svc", "x:y", lambda: CommonSettings(), consume=_consume)
    result = CliRunner().invoke(cli, ["consume", "--metrics-port", port])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_consume_names_a_metrics_port_that_is_taken() -> None:
    cli = make_service_cli("svc", "x:y", lambda: CommonSettings(), consume=_consume)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["consume", "--metrics-port", str(port)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"qcdr-svc consume: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"
    )
