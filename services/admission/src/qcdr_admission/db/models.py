"""Every table of the admission service, for Alembic (``env.py``) and the migration tests.

Each domain package registers its models on :class:`~qcdr_admission.db.base.AdmissionBase`;
importing them here puts them all on one MetaData.
"""

from __future__ import annotations

from qcdr_admission.db.base import OUTBOX, AdmissionBase
from qcdr_admission.decisions.models import DecisionRow
from qcdr_admission.policies.models import PolicyRow, PolicyStateRow

metadata = AdmissionBase.metadata

__all__ = ["OUTBOX", "DecisionRow", "PolicyRow", "PolicyStateRow", "metadata"]
