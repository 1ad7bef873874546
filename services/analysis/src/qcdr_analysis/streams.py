"""Streams of the analysis service (names without the configurable key prefix) and their types."""

from qcdr_common.contracts.federation.v1 import BASELINE_SHARED as BASELINE_SHARED_TYPE
from qcdr_common.contracts.federation.v1 import BASELINES_STREAM

SERVICE = "analysis"

# Normalized SecurityEvents from ingest, one envelope per event (payload: the SecurityEvent).
EVENTS = "ingest:events"
EVENT_OBSERVED = "ingest.event_observed"
GROUP = "analysis"

# Findings (contract qcdr_common.contracts.findings.v1), published through the outbox.
FINDINGS = "analysis:findings"
FINDING_RAISED = "analysis.finding_raised"

# Workload resource samples from ingest (contract qcdr_common.contracts.samples.v1), many per envelope.
SAMPLES = "ingest:samples"
SAMPLES_RECEIVED = "ingest.samples_received"

# Baselines other clusters learned, from this cluster's federation spoke (contract
# qcdr_common.contracts.federation.v1.SharedBaseline, one per envelope); empty without federation.
BASELINES = BASELINES_STREAM
BASELINE_SHARED = BASELINE_SHARED_TYPE

PRODUCES = (FINDINGS,)
# ingest:intel is not consumed: intel_match queries ingest's view for every batch, so there is
# no cached copy of the indicator set to invalidate.
CONSUMES = (EVENTS, SAMPLES, BASELINES)
