"""Process executions for the anomaly-engine tests: a Poisson number of ``process_exec`` events
in one minute of one workload, at random seconds, with ids from the caller's counter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
from qcdr_common.contracts.events.v1 import ProcessInfo, SecurityEvent, Severity, Workload


def minute_of_execs(
    rng: np.random.Generator, rate: float, start: datetime, workload: Workload, ids: Iterator[int]
) -> list[SecurityEvent]:
    """``Poisson(rate)`` executions of three tools within the minute from ``start`` (unsorted)."""
    events = []
    for _ in range(int(rng.poisson(rate))):
        n = next(ids)
        events.append(
            SecurityEvent(
                id=f"e{n}",
                source="tetragon",
                category="process_exec",
                severity=Severity.INFO,
                event_time=start + timedelta(seconds=float(rng.uniform(0, 59))),
                workload=workload,
                process=ProcessInfo(path=f"/usr/bin/tool{n % 3}"),
            )
        )
    return events
