"""FastAPI dependencies of the federation service."""

from __future__ import annotations

from fastapi import Request

from qcdr_federation.settings import FederationSettings


def settings_dep(request: Request) -> FederationSettings:
    settings: FederationSettings = request.app.state.settings
    return settings
