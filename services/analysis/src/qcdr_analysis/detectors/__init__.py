"""Detectors: one module per detector in this package; importing the module registers it.

A detector is a pure function from a micro-batch of events to findings. It declares a ``name``,
a pydantic ``Config`` (unknown keys fail), a ``setup`` that turns the validated config into the
state it runs with (compiled rules, thresholds; loaded once at start, so a bad rule file stops the
service instead of silently detecting nothing) and, when it needs data from Postgres, one async
``lookup`` that fetches it for the whole batch in one query.

A *stateful* detector (behavioural profiles, baselines) keeps its state in memory and also
declares ``persist``, which writes what the batch changed in the batch's own transaction (so a
committed batch and its state changes are one), and ``discard``, called when that transaction did
not commit: the detector forgets its unsaved changes and reloads them from Postgres when next
needed, so a retried batch is not counted twice. ``persist`` may leave cheap changes (counts)
unsaved for a while; ``all_due`` marks them due, so the next ``persist`` writes everything (a
clean stop). The dispatcher
(:mod:`qcdr_analysis.findings.service`) owns the rest: lookups in a savepoint, error isolation per
detector and per event, metrics.

Finding ids are deterministic: a hash of the detector name and the evidence events, so a
redelivered or replayed event yields the same id and the insert deduplicates it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.contracts.findings.v1 import Finding, FindingKind
from qcdr_common.registry import Registry, import_submodules
from sqlalchemy.ext.asyncio import AsyncSession

S = TypeVar("S")


class DetectorConfig(BaseModel):
    """Base of every detector's ``Config``: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# (session, batch, state) -> whatever ``detect`` needs from Postgres for this batch
LookupFn = Callable[[AsyncSession, Sequence[SecurityEvent], S], Awaitable[Any]]
# (batch, state, lookup result or None) -> findings; pure
DetectFn = Callable[[Sequence[SecurityEvent], S, Any], Iterable[Finding]]
# (session, state) -> None: write the state the batch changed, in the batch's transaction
PersistFn = Callable[[AsyncSession, S], Awaitable[None]]


@dataclass(frozen=True)
class Detector(Generic[S]):
    name: str
    kind: FindingKind
    config: type[DetectorConfig]
    setup: Callable[[Any], S]  # validated config -> state
    detect: DetectFn[S]
    lookup: LookupFn[S] | None = None
    persist: PersistFn[S] | None = None
    discard: Callable[[S], None] | None = None
    all_due: Callable[[S], None] | None = None


DETECTORS: Registry[Detector[Any]] = Registry("detector")


def register(detector: Detector[S]) -> Detector[S]:
    """Register ``detector`` under its name (a duplicate name fails at import)."""
    DETECTORS.add(detector.name, detector, detector.detect.__module__)
    return detector


def load_detectors() -> Registry[Detector[Any]]:
    """Import every detector module of this package (each registers itself); idempotent."""
    import qcdr_analysis.detectors as package

    import_submodules(package)
    return DETECTORS


def finding_id(detector: str, evidence: Sequence[SecurityEvent], discriminator: str = "") -> str:
    """``f-`` + 32 hex digits of SHA-256 over the detector, the evidence and a discriminator.

    Events are identified by source and id (ids are only unique within a source) and sorted, so
    the order evidence arrived in does not matter.
    """
    keys = sorted(f"{e.source}\x1f{e.id}" for e in evidence)
    digest = hashlib.sha256("\x1e".join([detector, discriminator, *keys]).encode()).hexdigest()
    return f"f-{digest[:32]}"
