"""``qcdr-ingest``: run the ingest service (``serve``) and migrate its tables (``db upgrade``)."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_ingest.db import upgrade
from qcdr_ingest.settings import get_settings

cli = make_service_cli("ingest", "qcdr_ingest.app:create_app", get_settings, db_upgrade=upgrade)
