"""API shapes of the findings routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field
from qcdr_common.api.pagination import Page
from qcdr_common.contracts.findings.v1 import Finding


class FindingRead(Finding):
    """A finding as published on ``analysis:findings``, plus when analysis stored it."""

    created_at: datetime = Field(description="When analysis recorded the finding.")


FindingList = Page[FindingRead]
