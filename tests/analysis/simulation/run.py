"""Drive a detector stack over a scenario: micro-batches in event-time order, then ``finish``."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.contracts.samples.v1 import WorkloadSample

from tests.analysis.simulation.traffic import MAX_ITEMS, Scenario

# the test's configuration of the real stack: 6 h of learning instead of the default 48 h
STACK_CONFIG: dict[str, Any] = {
    "behaviour_profile": {"learning_period": "PT6H"},
    "workload_anomaly": {"learning_period": "PT6H"},
}


class Stack(Protocol):
    def observe(
        self, *, events: Sequence[SecurityEvent], samples: Sequence[WorkloadSample]
    ) -> list[Finding]: ...

    def finish(self) -> list[Finding]: ...


def real_stack(config: dict[str, Any] | None = None) -> Stack:
    """The analysis service's in-memory detector stack, configured for the scenario."""
    from qcdr_analysis.anomaly.stack import InMemoryStack  # type: ignore[import-not-found,unused-ignore]

    stack: Stack = InMemoryStack.configure(config or STACK_CONFIG)
    return stack


@dataclass
class RunResult:
    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    samples: int = 0
    batches: int = 0
    adapter_events: int = 0  # events the ingest adapter converted (the rest are model_copy'd)
    generate_s: float = 0.0  # building the events and samples
    stack_s: float = 0.0  # inside the stack's observe/finish


@contextmanager
def few_collections() -> Iterator[None]:
    """Fewer cyclic GC passes while hundreds of thousands of short-lived dicts come and go: they
    are freed by reference counting, and full passes over a large heap would double the run time."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run(scenario: Scenario, stack: Stack | None, max_items: int = MAX_ITEMS) -> RunResult:
    """Feed every batch of ``scenario`` to ``stack`` (None: generate only, for timing)."""
    result = RunResult()
    with few_collections():
        started = time.perf_counter()
        for batch in scenario.batches(max_items):
            result.batches += 1
            result.events += len(batch.events)
            result.samples += len(batch.samples)
            if stack is not None:
                t = time.perf_counter()
                result.findings.extend(stack.observe(events=batch.events, samples=batch.samples))
                result.stack_s += time.perf_counter() - t
        if stack is not None:
            t = time.perf_counter()
            result.findings.extend(stack.finish())
            result.stack_s += time.perf_counter() - t
        result.generate_s = time.perf_counter() - started - result.stack_s
    result.adapter_events = scenario.factory.converted
    return result
