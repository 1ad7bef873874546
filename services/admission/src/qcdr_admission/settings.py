"""Settings of the admission service (env prefix ``QCDR_``).

The Pod Security Standards levels and template handling are :class:`qcdr_admission.engine.PssConfig`
(``QCDR_ADMISSION_PSS_*``, ``QCDR_ADMISSION_DENY_TEMPLATES``); this class holds the webhook's
serving, TLS and decision-log settings.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from qcdr_common.settings import CommonSettings


class AdmissionSettings(CommonSettings):
    service_name: str = "admission"

    # --- TLS (the API server only calls webhooks over HTTPS)
    tls_cert: Path | None = Field(
        default=None,
        validation_alias="QCDR_ADMISSION_TLS_CERT",
        description="PEM serving certificate (chain) file; reloaded when it changes.",
    )
    tls_key: Path | None = Field(
        default=None,
        validation_alias="QCDR_ADMISSION_TLS_KEY",
        description="PEM private key of the serving certificate; reloaded with it.",
    )
    tls_required: bool = Field(
        default=False,
        validation_alias="QCDR_ADMISSION_TLS_REQUIRED",
        description="Refuse to start without a certificate (k8s/admission sets it; without TLS the "
        "API server cannot call the webhook, but the API and metrics work over plain HTTP).",
    )
    tls_reload_interval_s: float = Field(
        default=5.0,
        ge=0,
        validation_alias="QCDR_ADMISSION_TLS_RELOAD_INTERVAL_S",
        description="Look at the files' modification times at most this often (on a new connection).",
    )

    # --- the decision log (Postgres, micro-batched off the request path) and its events
    decisions_enabled: bool = Field(
        default=True,
        validation_alias="QCDR_ADMISSION_DECISIONS_ENABLED",
        description="Store decisions and publish admission.decision_made (off: metrics only).",
    )
    decisions_flush_s: float = Field(
        default=0.25,
        gt=0,
        le=1.0,
        validation_alias="QCDR_ADMISSION_DECISIONS_FLUSH_S",
        description="Longest wait in memory before a decision is written (a crash loses at most this).",
    )
    decisions_batch: int = Field(default=1000, ge=1, validation_alias="QCDR_ADMISSION_DECISIONS_BATCH")
    decisions_retention_s: float = Field(
        default=30 * 86_400.0,
        ge=0,
        validation_alias="QCDR_ADMISSION_DECISIONS_RETENTION_S",
        description="Stored decisions are deleted this long after the webhook answered (30 days); 0: never.",
    )
    decisions_queue: int = Field(
        default=20_000,
        ge=1,
        validation_alias="QCDR_ADMISSION_DECISIONS_QUEUE",
        description="Decisions held in memory at most; beyond it they are dropped and counted, "
        "never waited for on the request path.",
    )
    relay_in_app: bool = Field(
        default=True,
        validation_alias="QCDR_ADMISSION_RELAY_IN_APP",
        description="`serve` also runs the outbox relay that publishes admission:decisions.",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> AdmissionSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both QCDR_ADMISSION_TLS_CERT and QCDR_ADMISSION_TLS_KEY, or neither")
        return self


@lru_cache
def get_settings() -> AdmissionSettings:
    return AdmissionSettings()
