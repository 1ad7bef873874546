"""What the executor hands a cluster action: the lightkube client and the names qcdr writes with."""

from __future__ import annotations

from dataclasses import dataclass

from lightkube import AsyncClient

from qcdr_response.policies.apply import DEFAULT_FIELD_MANAGER

# The pod label isolate_pod sets; its value (``qcdr-<action id>``) is what the policies select.
# label_pod and annotate_pod refuse to set it.
QUARANTINE_LABEL = "qcdr.qualys.com/quarantine"


@dataclass(frozen=True)
class ClusterContext:
    client: AsyncClient
    field_manager: str = DEFAULT_FIELD_MANAGER
    quarantine_label: str = QUARANTINE_LABEL
