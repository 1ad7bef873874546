"""Alembic environment of the admission service: ``qcdr-admission db upgrade``, or a developer's
``alembic -c services/admission/src/qcdr_admission/db/alembic.ini revision --autogenerate -m "..."``
(the URL then comes from ``DATABASE_URL``)."""

from __future__ import annotations

from qcdr_admission.db import VERSION_TABLE
from qcdr_admission.db.models import metadata
from qcdr_common.migrations import run_alembic_env


def _settings_url() -> str:
    from qcdr_admission.settings import get_settings

    return get_settings().database_url.get_secret_value()


run_alembic_env(metadata, VERSION_TABLE, _settings_url)
