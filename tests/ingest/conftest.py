"""Shared fixtures for the Qualys ingest tests: fast client settings and a clean environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from qcdr_ingest.qualys.config import QualysSettings

_ENV = (
    "QUALYS_USERNAME",
    "QUALYS_PASSWORD",
    "QUALYS_GATEWAY_URL",
    "QUALYS_ACCESS_TOKEN",
    "QUALYS_PLATFORM",
    "QUALYS_POD",
)


@pytest.fixture(autouse=True)
def _no_qualys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real Qualys variables must never leak into a test."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_settings() -> Callable[..., QualysSettings]:
    """Settings with tiny backoffs and timeouts, so retries cost milliseconds."""

    def make(**overrides: Any) -> QualysSettings:
        values: dict[str, Any] = {
            "username": "demo",
            "password": SecretStr("demo-password"),
            "max_retries": 4,
            "backoff_base_s": 0.001,
            "backoff_max_s": 0.004,
            "retry_after_max_s": 0.01,
            "timeout_s": 2.0,
            "connect_timeout_s": 2.0,
        }
        values.update(overrides)
        return QualysSettings(_env_file=None, **values)

    return make
