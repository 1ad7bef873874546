"""The settings base every service's settings class extends.

Everything is read from the environment (prefix ``QCDR_``, nested with ``__``) or from files the
caller names; nothing is read at import time. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/qcdr"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class CommonSettings(BaseSettings):
    """Settings shared by all services; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(
        env_prefix="QCDR_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    service_name: str = "qcdr"
    cluster_id: str = "default"
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL (asyncpg driver); may carry a password, hence secret.",
    )
    redis_url: SecretStr = Field(default=SecretStr(DEFAULT_REDIS_URL), validation_alias="REDIS_URL")
    redis_prefix: str = Field(default="qcdr", validation_alias="QCDR_REDIS_PREFIX")
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON
    http_host: str = "127.0.0.1"
    http_port: int = 8000
