"""The registry of sample adapters: one module in ``samples/adapters/`` per source.

An adapter checks the shape of a decoded body (:attr:`SampleAdapter.size`, raising
:class:`ShapeError`) and turns it into :class:`~qcdr_common.contracts.samples.v1.WorkloadSample`
values (:attr:`SampleAdapter.convert`). Per-sample problems become :class:`Rejection` entries,
never exceptions; the dispatcher (router + :mod:`qcdr_ingest.samples.service`) owns limits,
chunking and publication.

Adding a source: drop ``samples/adapters/<name>.py`` that calls :func:`register` once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from qcdr_common.contracts.events.v1 import Workload
from qcdr_common.contracts.samples.v1 import WorkloadSample
from qcdr_common.registry import Registry, import_submodules

from qcdr_ingest.events.service import MAX_FUTURE, NUL_REASON, too_far_ahead


class ShapeError(ValueError):
    """The body as a whole is not what the source sends; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int  # the item (json) or the series (prometheus), from 0
    reason: str
    sample: int | None = None  # prometheus: the sample within the series; None: all of them
    count: int = 1  # input samples this rejection covers (a malformed series: all of its samples)


@dataclass(slots=True)
class Converted:
    samples: list[WorkloadSample]
    accepted: int = 0  # input samples that became (part of) a WorkloadSample
    ignored: int = 0  # input samples deliberately not used (unknown series, a counter's first sample)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def rejected_count(self) -> int:
        return sum(r.count for r in self.rejected)


@dataclass(frozen=True, slots=True)
class Horizon:
    """The newest time a sample may carry: ``now`` plus ``max_future`` (``QCDR_EVENTS_MAX_FUTURE_S``,
    as for events). One sample from a node whose clock runs ahead would move analysis's clock
    ahead and make it drop every live sample and event as late."""

    now: datetime
    max_future: timedelta = MAX_FUTURE

    @property
    def latest(self) -> datetime:
        return self.now + self.max_future

    def refuses(self, moment: datetime, name: str) -> str | None:
        """The rejection reason of a time (field ``name``) beyond the horizon, else None."""
        return too_far_ahead(moment, self.now, self.max_future, name)


def unstorable(workload: Workload) -> str | None:
    """:data:`NUL_REASON` when a workload field holds a NUL character, else None: analysis stores
    workloads in PostgreSQL, which refuses NUL, and would dead-letter the whole envelope."""
    for name, value in workload:
        if isinstance(value, str) and "\x00" in value:
            return f"workload.{name} {NUL_REASON}"
    return None


# decoded body -> how many samples it carries (ShapeError when it is not this source's shape)
Size = Callable[[Any], int]
# (decoded body, the cluster to assume where a sample names none, the newest time allowed) -> samples
Convert = Callable[[Any, str, Horizon], Converted]


@dataclass(frozen=True, slots=True)
class SampleAdapter:
    name: str
    summary: str
    size: Size
    convert: Convert


SAMPLE_ADAPTERS: Registry[SampleAdapter] = Registry("sample adapter")


def register(name: str, summary: str, size: Size, convert: Convert, module: str) -> SampleAdapter:
    """Register an adapter; ``module`` is the caller's ``__name__`` (the registry reports it)."""
    return SAMPLE_ADAPTERS.add(name, SampleAdapter(name, summary, size, convert), module)


def load_sample_adapters() -> Registry[SampleAdapter]:
    """Every adapter module imported (each registers itself), then the registry."""
    import qcdr_ingest.samples.adapters as package

    import_submodules(package)
    return SAMPLE_ADAPTERS
