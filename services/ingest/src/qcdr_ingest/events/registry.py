"""The registry of event adapters: one module in ``events/adapters/`` per source.

An adapter turns one raw item a source sends (a Tetragon export line, a Falco alert, a Qualys CDR
finding) into a :class:`SecurityEvent`, or raises :class:`AdapterError` with a short reason that is
reported back to the sender for that item (:class:`NotAnEventError` for an item that is valid but not
an event: counted, not reported). Adapters are pure functions; the dispatcher
(:mod:`qcdr_ingest.events.service`) owns limits, deduplication, storage and publication.

Adding a source: drop ``events/adapters/<name>.py`` that calls :func:`register` once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from qcdr_common.api.errors import ApiError
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.registry import Registry, import_submodules


class AdapterError(ValueError):
    """One item cannot become an event; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAnEventError(AdapterError):
    """The item is well formed but is not an event this source turns into one (a Hubble flow in
    the middle of a connection): counted as ignored, not reported as a fault."""


# (raw item, the cluster to assume when the item names none) -> event
Convert = Callable[[Any, str], SecurityEvent]


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    summary: str  # one line for the API's list of sources
    convert: Convert


ADAPTERS: Registry[Adapter] = Registry("event adapter")


def register(name: str, summary: str, convert: Convert, module: str) -> Adapter:
    """Register an adapter; ``module`` is the caller's ``__name__`` (the registry reports it)."""
    return ADAPTERS.add(name, Adapter(name, summary, convert), module)


def load_adapters() -> Registry[Adapter]:
    """Every adapter module imported (each registers itself), then the registry."""
    import qcdr_ingest.events.adapters as package

    import_submodules(package)
    return ADAPTERS


def unknown_source(source: str, known: Iterable[str]) -> ApiError:
    """The 404 for a source no adapter answers, listing the ones that do (events and samples)."""
    names = sorted(known)
    return ApiError(
        404,
        f"unknown source {source!r}; known sources: {', '.join(names)}",
        reason="unknown_source",
        extra={"known_sources": names},
    )
