"""The action registry: every module in ``actions/cluster``, ``actions/node`` and
``actions/policy`` registers its action here when imported."""

from __future__ import annotations

from functools import cache
from typing import Any

from qcdr_common.registry import Registry, import_submodules

from qcdr_response.actions.base import Action

ACTIONS: Registry[Action[Any]] = Registry("action")


@cache
def load_actions() -> Registry[Action[Any]]:
    """Import every action module once and return the filled registry."""
    from qcdr_response.actions import cluster, node, policy

    for package in (cluster, node, policy):
        import_submodules(package)
    return ACTIONS
