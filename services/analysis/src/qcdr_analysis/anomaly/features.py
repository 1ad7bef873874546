"""What a one-minute window of a workload is made of.

Event features are counts derived from events (executions, connections, file writes, other
hooks) and distinct counts (binaries, destinations, ports); resource features come from the
workload's resource samples (``POST /v1/metrics/{source}``). Counts are *rates* in the tests: the
univariate detectors look at the mean of the last few windows, so a single busy minute of a
Poisson-like process does not look like a burst, while a sustained burst does within minutes.
"""

from __future__ import annotations

from enum import StrEnum

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.samples.v1 import KNOWN_METRICS

from qcdr_analysis.tetragon.view import HOOK_EVENTS, view


class FeatureKind(StrEnum):
    COUNT = "count"  # events per minute: Poisson-like, compared with an absolute and relative effect
    GAUGE = "gauge"  # resource level: compared relatively, and followed for slow shifts (EWMA)


EVENT_FEATURES: tuple[str, ...] = (
    "exec_count",
    "distinct_binaries",
    "connect_count",
    "distinct_destinations",
    "distinct_ports",
    "file_writes",
    "other_hooks",
)
DISTINCT_FEATURES = ("distinct_binaries", "distinct_destinations", "distinct_ports")
DEFAULT_GAUGES: tuple[str, ...] = KNOWN_METRICS  # every metric the samples contract names

# ATT&CK techniques a deviation of one feature points to, where one applies
FEATURE_TECHNIQUES: dict[str, tuple[str, ...]] = {
    "cpu_cores": ("T1496",),  # resource hijacking (miners)
    "distinct_ports": ("T1046",),  # network service discovery (scans)
    "distinct_destinations": ("T1046",),
    "exec_count": ("T1059",),
    "distinct_binaries": ("T1059",),
    "network_tx_bytes_per_second": ("T1041",),  # exfiltration over the C2 channel
}

EXEC = 0
CONNECT = 1
FILE_WRITE = 2
OTHER = 3
IGNORED = -1


def classify(event: SecurityEvent) -> int:
    """Which counter an event adds to (EXEC, CONNECT, FILE_WRITE, OTHER or IGNORED).

    Cheap checks first: most events are executions or connections and need no raw parsing; only
    hook events without a destination are looked at closely to tell file writes apart.
    """
    category = event.category
    if category == "process_exec":
        return EXEC
    if category in ("process_exit", "process_close", "process_listen"):
        return IGNORED  # mirror an exec / connect already counted
    if event.network is not None and (event.network.ip is not None or event.network.domain):
        return CONNECT
    if category in HOOK_EVENTS:
        return FILE_WRITE if view(event).file_write else OTHER
    if event.source != "tetragon":
        # other sources (Qualys, Falco) report detections, not activity: they count as hooks
        return OTHER
    return OTHER
