"""Every table the analysis service owns, gathered for Alembic (``target_metadata``).

The ORM classes live with their domain (``findings/models.py``); a new table is imported here so
that ``alembic revision --autogenerate`` and the migration test see it.
"""

from __future__ import annotations

from qcdr_analysis.anomaly.models import BaselineRow, ModelRow
from qcdr_analysis.db.base import AnalysisBase
from qcdr_analysis.findings.models import OUTBOX, FindingRow, ReceivedRow
from qcdr_analysis.input_clocks import InputClockRow
from qcdr_analysis.profiles.models import ProfileRow, ProfileWorkloadRow

metadata = AnalysisBase.metadata

__all__ = [
    "OUTBOX",
    "AnalysisBase",
    "BaselineRow",
    "FindingRow",
    "InputClockRow",
    "ModelRow",
    "ProfileRow",
    "ProfileWorkloadRow",
    "ReceivedRow",
    "metadata",
]
