"""Alembic environment of the ingest service: ``qcdr-ingest db upgrade``, or a developer's
``alembic -c services/ingest/src/qcdr_ingest/db/alembic.ini revision --autogenerate -m "..."``
(the URL then comes from ``DATABASE_URL``)."""

from __future__ import annotations

from qcdr_common.migrations import run_alembic_env
from qcdr_ingest.db import VERSION_TABLE
from qcdr_ingest.db.models import metadata


def _settings_url() -> str:
    from qcdr_ingest.settings import get_settings

    return get_settings().database_url.get_secret_value()


run_alembic_env(metadata, VERSION_TABLE, _settings_url)
