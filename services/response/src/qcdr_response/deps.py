"""FastAPI dependencies of the response service."""

from __future__ import annotations

from fastapi import Request

from qcdr_response.settings import ResponseSettings


def settings_dep(request: Request) -> ResponseSettings:
    settings: ResponseSettings = request.app.state.settings
    return settings
