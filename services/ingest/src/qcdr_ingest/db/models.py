"""Every table the ingest service owns, gathered for Alembic (``target_metadata``).

The ORM classes live with their domain (``intel/state_postgres.py``, ...); a new table is imported
here so that ``alembic revision --autogenerate`` and the migration test see it.
"""

from __future__ import annotations

from qcdr_ingest.db.base import IngestBase
from qcdr_ingest.intel.state_postgres import FeedStateRow, ReputationRow

metadata = IngestBase.metadata

__all__ = ["FeedStateRow", "IngestBase", "ReputationRow", "metadata"]
