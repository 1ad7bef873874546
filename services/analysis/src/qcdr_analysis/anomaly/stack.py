"""The behaviour detectors of analysis in one process, in memory, without Postgres or streams.

The workload simulator (tests/analysis/simulation), the detection-quality table
(docs/DETECTION.md) and the benchmarks drive exactly the detectors the service runs, configured
the same way, through this: events and resource samples in, findings out. The population models
are refit synchronously when due (the service does it in a background thread).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.contracts.samples.v1 import WorkloadSample

from qcdr_analysis.anomaly.engine import WorkloadAnomalyEngine
from qcdr_analysis.detectors import load_detectors
from qcdr_analysis.findings.service import DetectorSet

# the detectors that learn behaviour; the others (rules, intel) need no simulation to be judged
BEHAVIOUR_DETECTORS = ("behaviour_profile", "workload_anomaly")


class InMemoryStack:
    def __init__(self, detectors: DetectorSet) -> None:
        self.detectors = detectors
        try:
            self.engine: WorkloadAnomalyEngine | None = detectors.state_of("workload_anomaly").engine
        except KeyError:
            self.engine = None
        self.fits = 0

    @classmethod
    def configure(
        cls,
        configs: Mapping[str, Mapping[str, Any]] | None = None,
        only: Collection[str] = BEHAVIOUR_DETECTORS,
    ) -> InMemoryStack:
        names = set(load_detectors().names())
        return cls(DetectorSet.configure(configs, disabled=names - set(only)))

    def observe(
        self, events: Sequence[SecurityEvent] = (), samples: Sequence[WorkloadSample] = ()
    ) -> list[Finding]:
        """Findings of one micro-batch (events and samples of about the same event time)."""
        findings: list[Finding] = []
        if self.engine is not None and samples:
            self.engine.add_samples(samples)
            if not events:
                findings.extend(self.engine.advance())
        if events:
            for active in self.detectors.active:
                findings.extend(active.detector.detect(events, active.state, None))
        self._maybe_refit()
        return findings

    def finish(self) -> list[Finding]:
        """Close every open window (the end of the scenario)."""
        return self.engine.finish() if self.engine is not None else []

    def _maybe_refit(self) -> None:
        engine = self.engine
        if engine is not None and engine.refit_due():
            model = engine.fit_model()
            if model is not None:
                engine.install_model(model)
                self.fits += 1
