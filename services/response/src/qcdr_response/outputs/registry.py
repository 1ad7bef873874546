"""The sink registry: every module in ``outputs/sinks`` registers its class here when imported."""

from __future__ import annotations

from functools import cache
from typing import Any

from qcdr_common.registry import Registry, import_submodules

from qcdr_response.outputs.base import Sink

SINKS: Registry[type[Sink[Any]]] = Registry("sink")


@cache
def load_sinks() -> Registry[type[Sink[Any]]]:
    from qcdr_response.outputs import sinks

    import_submodules(sinks)
    return SINKS
