"""Node actions against a real Docker Engine: one ``dockerd`` per test session (per xdist worker),
a busybox image imported offline, and busybox containers with kubelet's pod labels and no network.

If dockerd cannot start, the fixture raises with the reason and the daemon's log: the tests
fail, they are never skipped.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container
from qcdr_common.contracts.actions.v1 import ActionOp, ActionRequest, ActionTarget
from qcdr_common.registry import Registry, import_submodules
from qcdr_common.testing.dockerd import DockerDaemon
from qcdr_response.actions import node as node_package
from qcdr_response.actions.base import Action, Scope
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._context import NodeContext
from qcdr_response.actions.node._docker import DockerRuntime
from qcdr_response.actions.registry import ACTIONS

NODE = "node-a"
RunPod = Callable[..., Container]


def node_actions() -> Registry[Action[Any]]:
    """The node actions alone (importing ``actions/node`` only), so these tests do not depend on
    the cluster and policy action modules."""
    import_submodules(node_package)
    registry: Registry[Action[Any]] = Registry("action")
    for name, action in ACTIONS.items():
        if action.scope is Scope.NODE:
            registry.add(name, action, ACTIONS.origin(name))
    return registry


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    daemon = DockerDaemon().start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def docker_client(dockerd: DockerDaemon) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=dockerd.host, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(dockerd: DockerDaemon) -> str:
    return dockerd.import_busybox("qcdr-busybox:test")


@pytest.fixture
def node_ctx(docker_client: docker.DockerClient, tmp_path: Path) -> NodeContext:
    return NodeContext(
        runtime=DockerRuntime(docker_client),
        node=NODE,
        quarantine_root=tmp_path / "quarantine",
        forensics_root=tmp_path / "forensics",
    )


@pytest.fixture
def run_pod(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[RunPod]:
    """Start a busybox container as kubelet would label it; every one is removed afterwards."""
    started: list[Container] = []

    def run(
        script: str = "sleep 600",
        *,
        namespace: str | None = "shop",
        pod: str = "web-1",
        pod_uid: str | None = None,
        environment: dict[str, str] | None = None,
        ready: str | None = None,
    ) -> Container:
        labels = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.uid": pod_uid or str(uuid.uuid4())}
        if namespace is not None:
            labels["io.kubernetes.pod.namespace"] = namespace
        else:
            labels = {}
        container = docker_client.containers.run(
            busybox_image,
            ["sh", "-c", script],
            detach=True,
            network_mode="none",
            labels=labels,
            environment=environment or {},
            init=False,
        )
        started.append(container)
        container.reload()
        assert container.status == "running", container.logs()
        if ready is not None:  # a file the script creates once it has set everything up
            wait_for(lambda: exists_in(container, ready), f"{ready} in the container")
        return container

    yield run
    # killed, not removed: removal costs a second each; DockerDaemon.stop() removes them all
    for container in started:
        with contextlib.suppress(docker.errors.APIError):  # exited or removed already
            container.kill()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def init_pid(container: Container) -> int:
    container.reload()
    return int(container.attrs["State"]["Pid"])


def container_root(container: Container) -> Path:
    return Path(f"/proc/{init_pid(container)}/root")


def exists_in(container: Container, path: str) -> bool:
    return (container_root(container) / path.lstrip("/")).exists()


def host_pid(container: Container, cmdline: list[str]) -> int:
    """The host PID of the container's process running exactly ``cmdline``."""
    found: list[int] = []

    def look() -> bool:
        for pid in _procfs.container_pids(Path("/proc"), str(container.id)):
            try:
                if _procfs.process_info(Path("/proc"), pid)["cmdline"] == cmdline:
                    found.append(pid)
                    return True
            except ProcessLookupError:
                continue
        return False

    wait_for(look, f"process {cmdline} in {container.short_id}")
    return found[0]


def status(container: Container) -> str:
    container.reload()
    return str(container.status)


_ids = iter(range(1, 1 << 30))


def make_request(
    action: str,
    container: Container | None = None,
    *,
    dry_run: bool = False,
    op: ActionOp = ActionOp.EXECUTE,
    undo: dict[str, Any] | None = None,
    action_id: int | None = None,
    reason: str = "",
    **target: Any,
) -> ActionRequest:
    """A request for ``action`` on ``container`` (``parameters=`` goes to the request)."""
    parameters = target.pop("parameters", {})
    if container is not None:
        target.setdefault("container_id", str(container.id))
    return ActionRequest(
        action_id=action_id or next(_ids),
        op=op,
        action=action,
        target=ActionTarget(**target),
        parameters=parameters,
        dry_run=dry_run,
        undo=undo,
        reason=reason,
        requested_at=datetime.now(UTC),
    )
