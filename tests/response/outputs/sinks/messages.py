"""Output messages for the chat and incident sink tests (Slack, Teams, PagerDuty, webhook)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from qcdr_response.outputs.message import OutputMessage

from tests.response.service.conftest import T0, make_finding


def delivery(sink: str, n: int = 1, *, explanation: str | None = None, **overrides: Any) -> OutputMessage:
    """Delivery ``n`` to ``sink``: an nmap finding in ``payments`` (override anything, ``finding``
    included), its own group key unless one is given."""
    finding = overrides.pop("finding", None) or (
        make_finding(explanation=explanation) if explanation is not None else make_finding()
    )
    data: dict[str, Any] = {
        "id": f"delivery-{n:04d}",
        "sink": sink,
        "group_key": f"Network_Scanning_Utility|payments|{n}",
        "finding": finding,
        "finding_ids": (finding.id,),
        "first_seen": T0,
        "last_seen": T0 + timedelta(seconds=30),
        "cluster_id": "prod-eu",
        "created_at": T0 + timedelta(seconds=31),
        **overrides,
    }
    return OutputMessage(**data)
