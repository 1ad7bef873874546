"""Settings of the ingest service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache

from qcdr_common.settings import CommonSettings


class IngestSettings(CommonSettings):
    service_name: str = "ingest"


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
