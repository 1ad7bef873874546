"""Settings of the admission service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache

from qcdr_common.settings import CommonSettings


class AdmissionSettings(CommonSettings):
    service_name: str = "admission"


@lru_cache
def get_settings() -> AdmissionSettings:
    return AdmissionSettings()
