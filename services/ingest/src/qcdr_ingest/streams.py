"""Streams of the ingest service (names without the configurable key prefix) and their types."""

# Normalized SecurityEvents (contract qcdr_common.contracts.events.v1), one envelope per event
# newly stored; the payload is the SecurityEvent.
EVENTS = "ingest:events"
EVENT_OBSERVED = "ingest.event_observed"
# The threat-intel indicator set changed; the payload is an IntelChanged summary
# (qcdr_ingest.intel.schemas): readers query the view ingest_intel_listed for the set itself.
INTEL = "ingest:intel"
INTEL_CHANGED = "ingest.intel_changed"
# Workload resource samples (contract qcdr_common.contracts.samples.v1), many per envelope; the
# payload is WorkloadSamples. Published only, never stored: nothing to replay them from.
SAMPLES = "ingest:samples"
SAMPLES_RECEIVED = "ingest.samples_received"
PRODUCES = (EVENTS, INTEL, SAMPLES)
CONSUMES: tuple[str, ...] = ()
