"""Settings of the response service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache

from qcdr_common.settings import CommonSettings


class ResponseSettings(CommonSettings):
    service_name: str = "response"


@lru_cache
def get_settings() -> ResponseSettings:
    return ResponseSettings()
