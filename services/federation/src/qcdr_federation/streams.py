"""Streams of the federation service (names without the configurable key prefix) and their types.

A hub publishes the events spokes forward onto its own ``ingest:events`` (as ingest announces
local ones), so its analysis correlates across clusters. A spoke publishes the policies placed on it
and the baselines other clusters shared; it consumes its own response, ingest and analysis streams.
"""

from qcdr_common.contracts.federation.v1 import (
    BASELINE_SHARED,
    BASELINES_STREAM,
    POLICIES_STREAM,
    POLICY_PLACED,
    POLICY_REMOVED,
)

SERVICE = "federation"

# hub: forwarded SecurityEvents, one envelope each (type and payload exactly as ingest's)
EVENTS = "ingest:events"
EVENT_OBSERVED = "ingest.event_observed"

# spoke
POLICIES = POLICIES_STREAM
BASELINES = BASELINES_STREAM
RESPONSE_EVENTS = "response:events"
FINDINGS = "analysis:findings"

PRODUCES = (POLICIES, BASELINES, EVENTS)
CONSUMES = (RESPONSE_EVENTS, EVENTS, FINDINGS)

__all__ = [
    "BASELINES",
    "BASELINE_SHARED",
    "CONSUMES",
    "EVENTS",
    "EVENT_OBSERVED",
    "FINDINGS",
    "POLICIES",
    "POLICY_PLACED",
    "POLICY_REMOVED",
    "PRODUCES",
    "RESPONSE_EVENTS",
    "SERVICE",
]
