"""Settings of the analysis service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache

from qcdr_common.settings import CommonSettings


class AnalysisSettings(CommonSettings):
    service_name: str = "analysis"


@lru_cache
def get_settings() -> AnalysisSettings:
    return AnalysisSettings()
