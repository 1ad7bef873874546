"""Small typed factories for response tests."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent

_ids = count(1)


def make_event(**overrides: Any) -> SecurityEvent:
    data: dict[str, Any] = {
        "id": f"finding-{next(_ids)}",
        "source": "qualys",
        "category": "Network_Scanning_Utility",
        "severity": "high",
        "event_time": datetime(2026, 12, 4, 12, 0, tzinfo=UTC),
        "workload": {"namespace": "payments", "pod": "api-7d9f-x2", "container": "api"},
    }
    for key, value in overrides.items():
        if key in {"namespace", "pod", "container"}:
            data["workload"] = {**data["workload"], key: value}
        else:
            data[key] = value
    return SecurityEvent.model_validate(data)
