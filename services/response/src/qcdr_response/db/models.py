"""Every table the response service owns, gathered for Alembic (``target_metadata``).

The ORM classes live with their domain (``lifecycle/models.py``); a new table is imported here so
that ``alembic revision --autogenerate`` and the migration test see it.
"""

from __future__ import annotations

from qcdr_common.streams.outbox import outbox_table

from qcdr_response.actions.models import ActionRow, AuditRow
from qcdr_response.db.base import ResponseBase
from qcdr_response.dns.models import ResolveDenyRow
from qcdr_response.federation.models import FederatedRemovalRow
from qcdr_response.intel.models import WrittenRow
from qcdr_response.lifecycle.models import (
    FindingPolicyRow,
    FindingRow,
    PolicyRow,
    PolicyVersionRow,
    ReceivedRow,
)
from qcdr_response.outputs.models import DeadLetterRow, OutputQueueRow

metadata = ResponseBase.metadata
# the transactional outbox of everything response publishes (stream response:events)
outbox = outbox_table(metadata, "response")

__all__ = [
    "ActionRow",
    "AuditRow",
    "DeadLetterRow",
    "FederatedRemovalRow",
    "FindingPolicyRow",
    "FindingRow",
    "OutputQueueRow",
    "PolicyRow",
    "PolicyVersionRow",
    "ReceivedRow",
    "ResolveDenyRow",
    "ResponseBase",
    "WrittenRow",
    "metadata",
    "outbox",
]
