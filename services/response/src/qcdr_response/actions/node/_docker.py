"""The Docker Engine as a node's container runtime (docker-py)."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors

from qcdr_response.actions.base import TargetGoneError
from qcdr_response.actions.node._runtime import ContainerInfo, redacted_copy


class DockerRuntime:
    name = "docker"

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def inspect(self, container_id: str) -> ContainerInfo:
        try:
            container = self.client.containers.get(container_id)  # inspects: attrs are current
        except docker.errors.NotFound:
            raise TargetGoneError(f"container {container_id} does not exist (any more)") from None
        attrs: dict[str, Any] = container.attrs
        config = attrs.get("Config") or {}
        state = attrs.get("State") or {}
        return ContainerInfo(
            id=str(container.id),
            name=str(attrs.get("Name", "")).lstrip("/"),
            status=str(state.get("Status", container.status)),
            init_pid=int(state.get("Pid") or 0),
            labels=dict(config.get("Labels") or {}),
            image=config.get("Image"),
            env=list(config.get("Env") or []),
            document=redacted_copy(attrs, ("Config", "Env")),
        )

    def _container(self, info: ContainerInfo) -> Any:
        try:
            return self.client.containers.get(info.id)
        except docker.errors.NotFound:
            raise TargetGoneError(f"container {info.id[:12]} does not exist (any more)") from None

    def stop(self, info: ContainerInfo, timeout: int) -> None:
        self._container(info).stop(timeout=timeout)

    def pause(self, info: ContainerInfo) -> None:
        self._container(info).pause()

    def unpause(self, info: ContainerInfo) -> None:
        self._container(info).unpause()

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        self.client.close()
