"""Every table the ingest service owns, gathered for Alembic (``target_metadata``).

The ORM classes live with their domain (``intel/state_postgres.py``, ``events/models.py``, ...); a
new table is imported here so that ``alembic revision --autogenerate`` and the migration test see
it. The view ``ingest_intel_listed`` is created by migration 0002 (see ``intel/indicator_store.py``).
"""

from __future__ import annotations

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.events.models import EventRow
from qcdr_ingest.intel.indicator_store import IndicatorRow, IntelStateRow
from qcdr_ingest.intel.state_postgres import FeedStateRow, ReputationRow
from qcdr_ingest.qualys.watermarks import WatermarkRow

metadata = IngestBase.metadata

__all__ = [
    "OUTBOX",
    "EventRow",
    "FeedStateRow",
    "IndicatorRow",
    "IngestBase",
    "IntelStateRow",
    "ReputationRow",
    "WatermarkRow",
    "metadata",
]
