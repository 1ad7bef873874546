"""The container runtime a node action talks to: the Docker Engine, or a CRI runtime (containerd,
CRI-O) as on most Kubernetes nodes. Both answer the same few questions (what is this container:
its state, init PID and kubelet's labels) and do the same few things (stop, pause, unpause)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

REDACTED = "<redacted>"


def redact_env(env: list[str]) -> list[str]:
    """``KEY=value`` entries with the values replaced: the keys say what was there, never what."""
    return [f"{e.partition('=')[0]}={REDACTED}" for e in env]


def redacted_copy(document: dict[str, Any], *paths: tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of ``document`` with the ``KEY=value`` list at each path redacted."""
    doc = copy.deepcopy(document)
    for path in paths:
        parent: Any = doc
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), list):
            parent[path[-1]] = redact_env([str(e) for e in parent[path[-1]]])
    return doc


@dataclass(frozen=True)
class ContainerInfo:
    id: str  # the full id
    name: str
    status: str  # running, paused, exited, created, restarting, ... (Docker's words)
    init_pid: int  # host PID of the container's first process; 0 when not running
    labels: dict[str, str]
    image: str | None
    env: list[str]  # KEY=value, as configured (the forensics bundle keeps the keys only)
    # the runtime's own description of the container (docker inspect, CRI status + info) for the
    # forensics bundle, environment values already redacted
    document: dict[str, Any] = field(default_factory=dict)


class ContainerRuntime(Protocol):
    """Blocking calls (node actions run them on a worker thread)."""

    name: str

    def inspect(self, container_id: str) -> ContainerInfo:
        """The container named by its full id or a unique prefix; ``TargetGoneError`` when none."""

    def stop(self, info: ContainerInfo, timeout: int) -> None: ...

    def pause(self, info: ContainerInfo) -> None: ...

    def unpause(self, info: ContainerInfo) -> None: ...

    def ping(self) -> None:
        """Raises when the runtime does not answer (readiness)."""

    def close(self) -> None: ...
