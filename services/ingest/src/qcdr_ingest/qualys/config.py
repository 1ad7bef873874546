"""Settings of the Qualys CDR client.

The original system's variable names (``QUALYS_USERNAME``, ``QUALYS_PASSWORD``,
``QUALYS_GATEWAY_URL``, ``QUALYS_ACCESS_TOKEN``, ``QUALYS_PLATFORM``; ``QUALYS_POD`` from ``qcr``)
are accepted as they are; tuning knobs use the ``QCDR_QUALYS_`` prefix.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from qcdr_common.secret_text import check_header_secret

from qcdr_ingest.qualys.platforms import get_platform, resolve_gateway
from qcdr_ingest.qualys.retry import RetryPolicy


def _env(original: str, ours: str) -> AliasChoices:
    # No bare lower-case alias: it would also match generic variables such as USERNAME.
    return AliasChoices(original, f"QCDR_QUALYS_{ours}")


class QualysSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QCDR_QUALYS_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    username: str | None = Field(default=None, validation_alias=_env("QUALYS_USERNAME", "USERNAME"))
    password: SecretStr | None = Field(default=None, validation_alias=_env("QUALYS_PASSWORD", "PASSWORD"))
    gateway_url: str | None = Field(
        default=None,
        validation_alias=_env("QUALYS_GATEWAY_URL", "GATEWAY_URL"),
        description="Bare host or full URL; beats the platform.",
    )
    access_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("QUALYS_ACCESS_TOKEN", "ACCESS_TOKEN"),
        description="A ready JWT used as bearer instead of logging in.",
    )
    platform: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QUALYS_PLATFORM", "QUALYS_POD", "QCDR_QUALYS_PLATFORM"),
        description="Platform name or alias (US1..KSA1, 'eu', 'canada', ...); default US2.",
    )

    # Paging. The CDR findings endpoint's paging parameters are not documented, hence configurable.
    page_size: int = Field(default=200, ge=1, le=10_000)
    page_param: str = "pageNumber"
    size_param: str = "pageSize"
    page_base: int = Field(default=0, ge=0, le=1, description="Number of the first page: 0 or 1.")
    window_cap: int = Field(
        default=10_000,
        ge=1,
        description="Most findings one time window is expected to page through; bigger windows are split.",
    )
    min_window_seconds: int = Field(default=1, ge=1, description="Windows this small are never split.")
    max_window_passes: int = Field(
        default=3, ge=1, description="Re-reads of a window whose total grew while it was paged."
    )
    verify_total: bool = Field(
        default=True, description="One extra request at the end to catch findings inserted late."
    )

    # HTTP.
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    verify_tls: bool = True
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    retry_after_max_s: float = Field(default=120.0, ge=0, description="Cap on a server's Retry-After.")

    # Token refresh: renew min(margin, fraction * lifetime) before expiry.
    token_refresh_margin_s: float = Field(default=300.0, ge=0)
    token_refresh_fraction: float = Field(default=0.1, ge=0, lt=1)
    token_default_lifetime_s: float = Field(
        default=3600.0, gt=0, description="Assumed lifetime of a token without an 'exp' claim."
    )

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return get_platform(value).name

    @field_validator("access_token")
    @classmethod
    def _token_is_one_line(cls, value: SecretStr | None) -> SecretStr | None:
        # it goes into the Authorization header; httpx would quote a bad one back in its error
        if value is not None:
            check_header_secret(value.get_secret_value().strip())
        return value

    @field_validator("gateway_url", "username")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def has_credentials(self) -> bool:
        """A token, or both a user name and a password, are configured."""
        if self.access_token is not None and self.access_token.get_secret_value().strip():
            return True
        return bool(self.username) and self.password is not None and bool(self.password.get_secret_value())

    @property
    def base_url(self) -> str:
        return resolve_gateway(self.platform, self.gateway_url)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            retry_after_max_s=self.retry_after_max_s,
        )
