"""``qcdr-analysis``: serve the findings API, consume events, migrate the tables, replay findings."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_analysis.db import upgrade
from qcdr_analysis.settings import get_settings
from qcdr_analysis.worker import consume, replay

cli = make_service_cli(
    "analysis",
    "qcdr_analysis.app:create_app",
    get_settings,
    db_upgrade=upgrade,
    consume=consume,
    replay=replay,
)
