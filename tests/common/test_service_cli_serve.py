"""``qcdr-<svc> serve`` with a configuration mistake: one line naming it and exit 2, no traceback,
and never the value that was wrong (it may be a token or a password)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, SecretStr
from qcdr_common.api.auth import ApiAuthSettings, TokenStore
from qcdr_common.service_cli import make_service_cli
from qcdr_common.settings import CommonSettings
from typer.testing import CliRunner

SECRET = "shorty-secret"


def short_token_app() -> None:
    TokenStore.from_settings(ApiAuthSettings(token=SecretStr(SECRET)))  # raises: under 16 characters


def bad_settings_app() -> None:
    class Tuning(BaseModel):
        lease_s: float = Field(ge=0.3)
        password: SecretStr

    Tuning.model_validate({"lease_s": 0.01, "password": 12345})


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        ("short_token_app", "a token needs at least 16 characters"),
        (
            "bad_settings_app",
            "lease_s: Input should be greater than or equal to 0.3; password: Input should be",
        ),
    ],
)
def test_a_configuration_mistake_is_one_line_and_exit_2(factory: str, reason: str) -> None:
    cli = make_service_cli("svc", f"{__name__}:{factory}", lambda: CommonSettings())
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("qcdr-svc serve: configuration error: ")
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    assert "12345" not in result.output


@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"], ["consume"], ["replay"]])
def test_an_empty_database_url_is_named_by_every_command(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DATABASE_URL=`` (an empty line in a .env file) used to reach SQLAlchemy and come back as
    "Could not parse SQLAlchemy URL" from ``db upgrade on :``."""
    monkeypatch.setenv("DATABASE_URL", "")

    async def nothing(*_: object) -> int:
        return 0

    cli = make_service_cli(
        "svc",
        f"{__name__}:short_token_app",
        lambda: CommonSettings(),
        db_upgrade=lambda url, rev: rev,
        consume=nothing,
        replay=nothing,
    )
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2
    assert result.stderr == (
        f"qcdr-svc {' '.join(command)}: configuration error: DATABASE_URL: Value error, is empty "
        "(unset it for the default, or give a URL)\n"
    )
