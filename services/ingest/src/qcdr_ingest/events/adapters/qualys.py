"""Qualys CDR findings (the JSON objects the CDR API returns), as pushed by a SOAR tool or script.

The same normalizer as the poller and once mode (:func:`~qcdr_ingest.qualys.normalize.normalize_finding`):
the finding's ``uuid`` is the event id, so a finding pushed and also polled is stored once.
"""

from __future__ import annotations

from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

from qcdr_ingest.events.registry import AdapterError, register
from qcdr_ingest.qualys.normalize import MalformedFindingError, normalize_finding


def convert(raw: Any, cluster: str) -> SecurityEvent:
    try:
        return normalize_finding(raw, cluster=cluster)
    except MalformedFindingError as exc:
        raise AdapterError(exc.reason) from None


register(
    "qualys", "Qualys CDR findings (JSON objects as the CDR findings API returns them)", convert, __name__
)
