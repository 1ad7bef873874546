"""Alembic environment of the response service: ``qcdr-response db upgrade``, or a developer's
``alembic -c services/response/src/qcdr_response/db/alembic.ini revision --autogenerate -m "..."``
(the URL then comes from ``DATABASE_URL``)."""

from __future__ import annotations

from qcdr_common.migrations import run_alembic_env
from qcdr_response.db import VERSION_TABLE
from qcdr_response.db.models import metadata


def _settings_url() -> str:
    from qcdr_response.settings import get_settings

    return get_settings().database_url.get_secret_value()


run_alembic_env(metadata, VERSION_TABLE, _settings_url)
