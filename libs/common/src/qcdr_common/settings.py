"""The settings base every service's settings class extends.

Everything is read from the environment (prefix ``QCDR_``, nested with ``__``) or from files the
caller names; nothing is read at import time. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import socket
from enum import StrEnum

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qcdr_common.logging import log_level

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
        # a validation error never quotes the value: DATABASE_URL may carry a password
        hide_input_in_errors=True,
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
    gc_tuning: bool = Field(
        default=True,
        description="Workers freeze start-up objects and collect less often (qcdr_common.gc_tuning).",
    )

    # Streams (qcdr_common.streams). MAXLEN trims entries whether or not a group has read them,
    # so it sits far above any backlog the system is expected to hold.
    stream_maxlen: int = Field(default=1_000_000, ge=1000)
    stream_batch: int = Field(default=500, ge=1, description="Entries per micro-batch.")
    stream_block_ms: int = Field(
        default=1000, ge=1, description="Longest blocking read; bounds stop latency."
    )
    stream_claim_idle_ms: int = Field(default=30_000, ge=1, description="Reclaim entries idle this long.")
    stream_max_deliveries: int = Field(default=5, ge=1, description="Dead-letter after this many deliveries.")
    outbox_poll_s: float = Field(default=0.05, gt=0, description="Outbox relay poll interval.")
    outbox_retention_s: float = Field(
        default=86_400.0,
        ge=0,
        description="Published outbox rows are kept this long (what `replay` can send again); 0: for good.",
    )
    retention_interval_s: float = Field(
        default=600.0, gt=0, description="How often old rows are deleted (one replica at a time)."
    )
    consume_metrics_port: int = Field(
        default=9100,
        ge=0,
        le=65535,
        description="Prometheus port of `consume` (0: none; `serve` has /metrics).",
    )
    consumer_name: str = Field(
        default_factory=socket.gethostname, description="This process's consumer name (the pod name)."
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return log_level(value)

    @field_validator("database_url", "redis_url")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        # an empty DATABASE_URL= in a .env file or a Secret: unset it to get the default
        if not value.get_secret_value().strip():
            raise ValueError("is empty (unset it for the default, or give a URL)")
        return value
