"""Settings of the federation service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache

from qcdr_common.settings import CommonSettings


class FederationSettings(CommonSettings):
    service_name: str = "federation"


@lru_cache
def get_settings() -> FederationSettings:
    return FederationSettings()
