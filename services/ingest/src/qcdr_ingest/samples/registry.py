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
from typing import Any

from qcdr_common.contracts.samples.v1 import WorkloadSample
from qcdr_common.registry import Registry, import_submodules


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


# decoded body -> how many samples it carries (ShapeError when it is not this source's shape)
Size = Callable[[Any], int]
# (decoded body, the cluster to assume where a sample names none) -> samples
Convert = Callable[[Any, str], Converted]


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
