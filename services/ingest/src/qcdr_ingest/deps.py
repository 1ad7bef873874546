"""FastAPI dependencies of the ingest service."""

from __future__ import annotations

from fastapi import Request

from qcdr_ingest.settings import IngestSettings


def settings_dep(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings
