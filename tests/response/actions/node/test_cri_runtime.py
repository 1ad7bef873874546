"""Node actions on a CRI runtime: a real containerd (its CRI plugin, runc) started for the module,
pods created through CRI as kubelet would (sandbox, container, kubelet's labels, a kubepods
cgroup parent), and the agent's CRI client: inspect, stop, pause and unpause through the cgroup
freezer, the init PID for kill, quarantine and forensics, and environment values never kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qcdr_common.contracts.actions.v1 import ActionOp, ActionOutcome
from qcdr_common.testing.containerd import ContainerdDaemon
from qcdr_common.testing.dockerd import DockerDaemon
from qcdr_response.actions.base import ActionError, TargetGoneError
from qcdr_response.actions.node import _freezer, _procfs
from qcdr_response.actions.node._context import NodeContext, load
from qcdr_response.actions.node._cri import runtime_v1_pb2 as pb
from qcdr_response.actions.node._cri.client import CriRuntime
from qcdr_response.actions.node._runtime import REDACTED
from qcdr_response.node_agent.settings import NodeAgentSettings
from qcdr_response.node_agent.worker import make_runtime

from tests.response.actions.node.conftest import NODE, make_request, node_actions, wait_for

IMAGE = "qcdr.test/busybox:1"
SECRET = "hunter2-do-not-keep"
Pod = dict[str, str]  # container_id, sandbox_id, pod_uid
PROC = Path("/proc")


@pytest.fixture(scope="module")
def containerd() -> Iterator[ContainerdDaemon]:
    daemon = ContainerdDaemon(sandbox_image=IMAGE).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def cri(containerd: ContainerdDaemon) -> Iterator[CriRuntime]:
    runtime = CriRuntime(containerd.endpoint, timeout_s=30)
    yield runtime
    runtime.close()


@pytest.fixture
def cri_ctx(cri: CriRuntime, tmp_path: Path) -> NodeContext:
    return NodeContext(
        runtime=cri, node=NODE, quarantine_root=tmp_path / "quarantine", forensics_root=tmp_path / "forensics"
    )


@pytest.fixture
def run_cri_pod(cri: CriRuntime) -> Iterator[Callable[..., Pod]]:
    """A pod as kubelet makes one through CRI: a sandbox (the node's network, so no CNI is
    needed), then the container with kubelet's labels, in the pod's kubepods cgroup."""
    sandboxes: list[str] = []

    def run(script: str = "sleep 600", *, namespace: str = "shop", pod: str = "web-1") -> Pod:
        uid = str(uuid.uuid4())
        node_ns = pb.NamespaceOption(network=pb.NODE, ipc=pb.NODE, pid=pb.CONTAINER)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=pod, uid=uid, namespace=namespace),
            log_directory=f"/tmp/qcdr-cri-logs/{uid}",
            labels={"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": pod},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"/kubepods/besteffort/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=node_ns),
            ),
        )
        sandbox = cri.call("RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse)
        sandboxes.append(sandbox.pod_sandbox_id)
        container_config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="web"),
            image=pb.ImageSpec(image=IMAGE),
            command=["/bin/sh", "-c", script],
            envs=[pb.KeyValue(key="API_TOKEN", value=SECRET)],
            labels={
                "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.name": pod,
                "io.kubernetes.pod.uid": uid,
                "io.kubernetes.container.name": "web",
            },
            log_path="web.log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=node_ns)
            ),
        )
        created = cri.call(
            "CreateContainer",
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox.pod_sandbox_id, config=container_config, sandbox_config=config
            ),
            pb.CreateContainerResponse,
        )
        cri.call(
            "StartContainer",
            pb.StartContainerRequest(container_id=created.container_id),
            pb.StartContainerResponse,
        )
        return {"container_id": created.container_id, "sandbox_id": sandbox.pod_sandbox_id, "pod_uid": uid}

    yield run
    for sandbox_id in sandboxes:
        for method, request, response in (
            (
                "StopPodSandbox",
                pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
                pb.StopPodSandboxResponse,
            ),
            (
                "RemovePodSandbox",
                pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                pb.RemovePodSandboxResponse,
            ),
        ):
            with contextlib.suppress(ActionError):  # best effort: containerd.stop() kills the rest
                cri.call(method, request, response)


def _count(ticks: Path) -> int:
    return ticks.read_text().count("tick")


def _host_pid(container_id: str, cmdline: list[str]) -> int:
    found: list[int] = []

    def look() -> bool:
        for pid in _procfs.container_pids(PROC, container_id):
            try:
                if _procfs.process_info(PROC, pid)["cmdline"] == cmdline:
                    found.append(pid)
                    return True
            except ProcessLookupError:
                continue
        return False

    wait_for(look, f"process {cmdline} in {container_id[:12]}")
    return found[0]


def test_inspect_a_kubelet_pod(cri: CriRuntime, run_cri_pod: Callable[..., Pod]) -> None:
    pod = run_cri_pod()
    info = cri.inspect(pod["container_id"][:12])  # a unique prefix, as pod status shows ids
    assert info.id == pod["container_id"]
    assert (info.name, info.status, info.image) == ("web", "running", IMAGE)
    assert info.init_pid > 1
    assert info.labels["io.kubernetes.pod.uid"] == pod["pod_uid"]
    assert _procfs.in_container(PROC, info.init_pid, info.id)  # the kubepods cgroup layout
    # the environment: keys kept, values never, in what forensics would write
    assert info.env == [f"API_TOKEN={SECRET}"]
    assert SECRET not in json.dumps(info.document)
    assert REDACTED in json.dumps(info.document)
    cri.ping()  # readiness: Version answers
    with pytest.raises(TargetGoneError):
        cri.inspect("0" * 64)


async def test_pause_through_the_freezer_then_undo(
    cri_ctx: NodeContext, run_cri_pod: Callable[..., Pod]
) -> None:
    pause = node_actions().get("pause_container")
    pod = run_cri_pod("while true; do echo tick >> /tmp/ticks; sleep 0.05; done")
    request = make_request("pause_container", container_id=pod["container_id"], namespace="shop")
    assert await pause.present(cri_ctx, request) is False
    done = await pause.execute(cri_ctx, request)
    assert done.outcome is ActionOutcome.SUCCEEDED, done.message
    info = cri_ctx.runtime.inspect(pod["container_id"])
    assert info.status == "paused"
    ticks = PROC / str(info.init_pid) / "root/tmp/ticks"
    before = _count(ticks)
    await asyncio.sleep(0.3)  # a running loop would tick six times meanwhile
    assert _count(ticks) == before  # frozen: nothing ran
    assert await pause.present(cri_ctx, request) is True
    assert await pause.recovered_undo(cri_ctx, request) == done.undo

    undo = make_request(
        "pause_container",
        container_id=pod["container_id"],
        namespace="shop",
        op=ActionOp.UNDO,
        undo=done.undo,
    )
    undone = await pause.undo(cri_ctx, undo)
    assert undone.outcome is ActionOutcome.SUCCEEDED, undone.message
    assert cri_ctx.runtime.inspect(pod["container_id"]).status == "running"
    wait_for(lambda: _count(ticks) > before, "the loop to tick again")


async def test_stop_kill_quarantine_and_forensics(
    cri_ctx: NodeContext, run_cri_pod: Callable[..., Pod]
) -> None:
    actions = node_actions()
    pod = run_cri_pod("echo payload > /tmp/payload.sh; sleep 600 & sleep 700")
    cid = pod["container_id"]
    target: dict[str, Any] = {"container_id": cid, "namespace": "shop", "pod_uid": pod["pod_uid"]}
    box = await load(cri_ctx, make_request("stop_container", **target).target)
    assert (box.namespace, box.pod, box.status) == ("shop", "web-1", "running")

    # kill: the PID is checked against the container's cgroup and start time, as on Docker
    pid = _host_pid(cid, ["sleep", "600"])
    start = _procfs.read_stat(PROC, pid).start_ticks
    kill = make_request("kill_process", pid=pid, pid_start_ticks=start, **target)
    killed = await actions.get("kill_process").execute(cri_ctx, kill)
    assert killed.outcome is ActionOutcome.SUCCEEDED, killed.message

    wait_for(lambda: (PROC / str(box.init_pid) / "root/tmp/payload.sh").exists(), "the payload")
    quarantine = make_request("quarantine_file", path="/tmp/payload.sh", **target)
    moved = await actions.get("quarantine_file").execute(cri_ctx, quarantine)
    assert moved.outcome is ActionOutcome.SUCCEEDED, moved.message
    assert not (PROC / str(box.init_pid) / "root/tmp/payload.sh").exists()

    bundle = await actions.get("capture_forensics").execute(
        cri_ctx, make_request("capture_forensics", **target)
    )
    assert bundle.outcome is ActionOutcome.SUCCEEDED, bundle.message
    manifest_path = next(cri_ctx.forensics_root.glob("*/manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    assert manifest["container"]["runtime"] == "cri"
    assert manifest["container"]["env_keys"] == ["API_TOKEN"]
    written = b"".join(p.read_bytes() for p in manifest_path.parent.rglob("*") if p.is_file())
    assert SECRET.encode() not in written

    stop = make_request("stop_container", parameters={"timeout": 2}, **target)
    stopped = await actions.get("stop_container").execute(cri_ctx, stop)
    assert stopped.outcome is ActionOutcome.SUCCEEDED, stopped.message
    assert cri_ctx.runtime.inspect(cid).status == "exited"


def test_freezer_finds_a_cgroup_seen_from_another_namespace(tmp_path: Path) -> None:
    # an agent in its own cgroup namespace reads /../../kubepods/... for other containers: the
    # host hierarchy (cgroup_root) is searched for the container's directory instead
    cid = "ab" * 32
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"0::/../../kubepods.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope\n")
    directory = tmp_path / "cgroup" / "kubepods.slice" / "kubepods-pod1.slice" / f"cri-containerd-{cid}.scope"
    directory.mkdir(parents=True)
    (directory / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    found, version = _freezer.freezer_dir(tmp_path / "proc", tmp_path / "cgroup", 42, cid)
    assert (found, version) == (directory, 2)
    assert _freezer.frozen(found, version) is False


def test_a_runtime_that_does_not_answer(tmp_path: Path) -> None:
    runtime = CriRuntime(f"unix://{tmp_path}/nothing.sock", timeout_s=1)
    try:
        with pytest.raises(ActionError, match="cri Version: UNAVAILABLE"):
            runtime.ping()
    finally:
        runtime.close()


def test_auto_takes_cri_when_it_answers(
    containerd: ContainerdDaemon, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    def runtime_for(**values: Any) -> str:
        settings = NodeAgentSettings(_env_file=None, node_name="node-a", docker_host=dockerd.host, **values)
        runtime = make_runtime(settings)
        try:
            return runtime.name
        finally:
            runtime.close()

    assert runtime_for(cri_endpoint=containerd.endpoint) == "cri"
    # no CRI socket (a node whose kubelet uses Docker through cri-dockerd): the Docker Engine
    assert runtime_for(cri_endpoint=f"unix://{tmp_path}/none.sock") == "docker"
    assert runtime_for(container_runtime="cri", cri_endpoint=f"unix://{tmp_path}/none.sock") == "cri"
