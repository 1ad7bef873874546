"""``qcdr-analysis``: serve the findings API, consume events, migrate the tables, replay findings."""

from __future__ import annotations

from datetime import datetime

from qcdr_common.service_cli import make_service_cli

from qcdr_analysis.db import upgrade
from qcdr_analysis.settings import get_settings


# The worker (detectors, models, correlation) is imported by the commands that run it: ``db
# upgrade`` and ``--help`` start in a fraction of the time.
async def consume() -> None:
    from qcdr_analysis.worker import consume as run

    await run()


async def replay(since: datetime | None) -> int:
    from qcdr_analysis.worker import replay as run

    return await run(since)


cli = make_service_cli(
    "analysis",
    "qcdr_analysis.app:create_app",
    get_settings,
    db_upgrade=upgrade,
    consume=consume,
    replay=replay,
)
