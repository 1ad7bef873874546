"""``qcdr-response``: serve the API, consume findings, migrate the tables, replay events."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_response.db import upgrade
from qcdr_response.settings import get_settings
from qcdr_response.worker import consume, replay

cli = make_service_cli(
    "response",
    "qcdr_response.app:create_app",
    get_settings,
    db_upgrade=upgrade,
    consume=consume,
    replay=replay,
)
