"""Small pod factories for the engine tests."""

from __future__ import annotations

import copy
from typing import Any

RESTRICTED_SC: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def container(name: str = "app", **security_context: Any) -> dict[str, Any]:
    """A container that passes restricted on its own, with ``security_context`` merged over it."""
    sc = copy.deepcopy(RESTRICTED_SC)
    sc.update(security_context)
    return {"name": name, "image": "registry.example/app:1", "securityContext": sc}


def make_pod(**overrides: Any) -> dict[str, Any]:
    """A pod spec that passes restricted at every version, with ``overrides`` set on the spec."""
    spec: dict[str, Any] = {
        "containers": [container()],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    spec.update(overrides)
    return spec
