from typing import Any

import pytest
from pydantic import ValidationError
from qcdr_ingest.qualys.config import QualysSettings


def test_original_environment_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUALYS_USERNAME", "alice")
    monkeypatch.setenv("QUALYS_PASSWORD", "s3cret")
    monkeypatch.setenv("QUALYS_GATEWAY_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", "a.b.c")
    monkeypatch.setenv("QUALYS_PLATFORM", "eu")
    settings = QualysSettings(_env_file=None)
    assert settings.username == "alice"
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cret"
    assert settings.access_token is not None
    assert settings.access_token.get_secret_value() == "a.b.c"
    assert settings.platform == "EU1"
    assert settings.base_url == "http://127.0.0.1:8080"  # the gateway wins over the platform
    assert "s3cret" not in repr(settings)
    assert "a.b.c" not in repr(settings)


def test_tuning_uses_the_qcdr_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCDR_QUALYS_PAGE_SIZE", "50")
    monkeypatch.setenv("QCDR_QUALYS_PAGE_BASE", "1")
    monkeypatch.setenv("QCDR_QUALYS_PAGE_PARAM", "page")
    monkeypatch.setenv("QCDR_QUALYS_MAX_RETRIES", "2")
    settings = QualysSettings(_env_file=None)
    assert (settings.page_size, settings.page_base, settings.page_param, settings.max_retries) == (
        50,
        1,
        "page",
        2,
    )
    assert settings.retry_policy.max_retries == 2


def test_defaults() -> None:
    settings = QualysSettings(_env_file=None)
    assert settings.page_size == 200
    assert (settings.page_param, settings.size_param, settings.page_base) == ("pageNumber", "pageSize", 0)
    assert settings.timeout_s == 30.0
    assert settings.base_url == "https://gateway.qg2.apps.qualys.com"


def test_qcr_pod_variable_selects_the_right_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUALYS_POD", "ca1")
    assert QualysSettings(_env_file=None).base_url == "https://gateway.qg1.apps.qualys.ca"


def test_unknown_platform_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUALYS_PLATFORM", "atlantis")
    with pytest.raises(ValidationError, match="valid platforms"):
        QualysSettings(_env_file=None)


def test_generic_username_variable_is_not_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERNAME", "shell-user")
    assert QualysSettings(_env_file=None).username is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, False),
        ({"username": "a"}, False),
        ({"password": "p"}, False),
        ({"username": "a", "password": "p"}, True),
        ({"access_token": "t.t.t"}, True),
        ({"access_token": "  "}, False),
    ],
)
def test_has_credentials(values: dict[str, Any], expected: bool) -> None:
    assert QualysSettings(_env_file=None, **values).has_credentials is expected
