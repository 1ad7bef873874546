"""Every table the ingest service owns, gathered for Alembic (``target_metadata``).

The ORM classes live with their domain (``intel/state_postgres.py``, ``events/models.py``, ...); a
new table is imported here so that ``alembic revision --autogenerate`` and the migration test see
it. The views ``ingest_intel_listed`` (migration 0002, ``intel/indicator_store.py``) and
``ingest_intel_domains`` (migration 0003, ``dns/domain_store.py``) and ``ingest_image_status``
(migration 0004, ``images/``) are contracts for other services.
"""

from __future__ import annotations

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.db.outbox import OUTBOX
from qcdr_ingest.dns.domain_store import DomainRow
from qcdr_ingest.events.models import EventRow
from qcdr_ingest.images.models import ImageRow
from qcdr_ingest.intel.indicator_store import IndicatorRow, IntelStateRow
from qcdr_ingest.intel.reputation_queue import ReputationQueueRow
from qcdr_ingest.intel.state_postgres import FeedStateRow, ReputationRow
from qcdr_ingest.qualys.watermarks import WatermarkRow

metadata = IngestBase.metadata

__all__ = [
    "OUTBOX",
    "DomainRow",
    "EventRow",
    "FeedStateRow",
    "ImageRow",
    "IndicatorRow",
    "IngestBase",
    "IntelStateRow",
    "ReputationQueueRow",
    "ReputationRow",
    "WatermarkRow",
    "metadata",
]
