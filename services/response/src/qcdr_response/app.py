"""The response service's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI
from qcdr_common.service_app import create_service_app

from qcdr_response.settings import get_settings


def create_app() -> FastAPI:
    return create_service_app(get_settings(), title="qcdr response")
