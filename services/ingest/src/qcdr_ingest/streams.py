"""Streams of the ingest service (names without the configurable key prefix)."""

# Normalized SecurityEvents (contract qcdr_common.contracts.events.v1).
EVENTS = "ingest:events"
# The indicator set changed (threat intel).
INTEL = "ingest:intel"
PRODUCES = (EVENTS, INTEL)
CONSUMES: tuple[str, ...] = ()
