"""FastAPI dependencies of the admission service."""

from __future__ import annotations

from fastapi import Request

from qcdr_admission.settings import AdmissionSettings


def settings_dep(request: Request) -> AdmissionSettings:
    settings: AdmissionSettings = request.app.state.settings
    return settings
