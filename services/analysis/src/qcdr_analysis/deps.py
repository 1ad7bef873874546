"""FastAPI dependencies of the analysis service."""

from __future__ import annotations

from fastapi import Request

from qcdr_analysis.settings import AnalysisSettings


def settings_dep(request: Request) -> AnalysisSettings:
    settings: AnalysisSettings = request.app.state.settings
    return settings
