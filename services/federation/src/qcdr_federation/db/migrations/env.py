"""Alembic environment of the federation service: ``qcdr-federation db upgrade``, or a developer's
``alembic -c services/federation/src/qcdr_federation/db/alembic.ini revision --autogenerate -m "..."``
(the URL then comes from ``DATABASE_URL``)."""

from __future__ import annotations

from qcdr_common.migrations import run_alembic_env
from qcdr_federation.db import VERSION_TABLE
from qcdr_federation.db.models import metadata


def _settings_url() -> str:
    from qcdr_federation.settings import get_settings

    return get_settings().database_url.get_secret_value()


run_alembic_env(metadata, VERSION_TABLE, _settings_url)
