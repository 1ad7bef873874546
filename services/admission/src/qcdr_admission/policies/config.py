"""Settings of the policies, the image-status cache and the runtime reader
(``QCDR_ADMISSION_*``; the webhook's own settings are :mod:`qcdr_admission.settings`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PolicySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QCDR_ADMISSION_", extra="ignore", frozen=True)

    builtin_policies: bool = Field(default=True, description="Serve the built-in default-security policy.")
    policies_poll_s: float = Field(
        default=0.5, gt=0, le=10, description="How often each replica reads the policy generation."
    )
    image_status_refresh_s: float = Field(
        default=60.0, gt=0, description="How often the image-status view is read into memory."
    )
    runtime_enabled: bool = Field(default=True, description="Read analysis:findings for runtime_aware.")
    runtime_window_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="A finding stays open this long after its event time (findings are never closed "
        "on the stream; a newer finding with the same id refreshes it).",
    )
    runtime_min_severity: str = Field(default="high", pattern="^(low|medium|high|critical)$")
    runtime_max_open: int = Field(
        default=50_000,
        ge=100,
        description="Open findings held at most (each replica); beyond it the soonest to expire go first.",
    )
    runtime_batch: int = Field(default=500, ge=1)
    runtime_block_ms: int = Field(default=1000, ge=1)
