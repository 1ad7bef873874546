"""The node agent's CRI client: ``ContainerStatus`` (verbose, for the init PID), ``StopContainer``
and ``Version`` over the runtime's unix socket (gRPC), and the cgroup freezer for pause, which
CRI does not have. Kubelet's labels are on the CRI container itself (``io.kubernetes.pod.*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from qcdr_response.actions.base import ActionError, TargetGoneError
from qcdr_response.actions.node import _freezer
from qcdr_response.actions.node._cri import runtime_v1_pb2 as pb
from qcdr_response.actions.node._runtime import REDACTED, ContainerInfo, redacted_copy

SERVICE = "/runtime.v1.RuntimeService/"
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
# CRI's states in Docker's words, so actions and results read the same on both runtimes
_STATES = {
    pb.CONTAINER_CREATED: "created",
    pb.CONTAINER_RUNNING: "running",
    pb.CONTAINER_EXITED: "exited",
    pb.CONTAINER_UNKNOWN: "unknown",
}
M = TypeVar("M", bound=Message)


class CriRuntime:
    name = "cri"

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout_s: float = 30.0,
        proc_root: Path = Path("/proc"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.channel = grpc.insecure_channel(endpoint)

    def call(self, method: str, request: Message, response: type[M], timeout: float | None = None) -> M:
        rpc: grpc.UnaryUnaryMultiCallable[Message, M] = self.channel.unary_unary(
            SERVICE + method, request_serializer=_serialize, response_deserializer=response.FromString
        )
        try:
            result: M = rpc(request, timeout=timeout or self.timeout_s)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.NOT_FOUND or (details and "not found" in details.lower()):
                raise TargetGoneError(f"cri {method}: {details}") from None
            raise ActionError(f"cri {method}: {code.name} {details}") from None
        return result

    def inspect(self, container_id: str) -> ContainerInfo:
        answer = self.call(
            "ContainerStatus",
            pb.ContainerStatusRequest(container_id=container_id, verbose=True),
            pb.ContainerStatusResponse,
        )
        status = answer.status
        info: dict[str, Any] = {}
        for key, raw in answer.info.items():
            try:
                info[key] = json.loads(raw)
            except ValueError:
                info[key] = raw
        found = info.get("info")
        detail: dict[str, Any] = found if isinstance(found, dict) else {}
        pid = int(detail.get("pid") or 0) if status.state == pb.CONTAINER_RUNNING else 0
        state = _STATES.get(status.state, "unknown")
        if pid and self._frozen(pid, status.id):
            state = "paused"
        return ContainerInfo(
            id=status.id,
            name=status.metadata.name,
            status=state,
            init_pid=pid,
            labels=dict(status.labels),
            image=status.image.image or None,
            env=_env(detail),
            document=_redacted({"status": MessageToDict(status), "info": info}),
        )

    def _frozen(self, pid: int, container_id: str) -> bool:
        try:
            directory, version = _freezer.freezer_dir(self.proc_root, self.cgroup_root, pid, container_id)
            return _freezer.frozen(directory, version)
        except (OSError, ActionError):
            return False  # no freezer to read: it cannot have been frozen through it

    def stop(self, info: ContainerInfo, timeout: int) -> None:
        # a frozen container cannot handle SIGTERM: thaw it first, as `docker stop` does
        if info.status == "paused":
            self.unpause(info)
        self.call(
            "StopContainer",
            pb.StopContainerRequest(container_id=info.id, timeout=timeout),
            pb.StopContainerResponse,
            timeout=timeout + self.timeout_s,
        )

    def _freeze(self, info: ContainerInfo, freeze: bool) -> None:
        if info.init_pid <= 0:
            raise ActionError(f"container {info.id[:12]} is {info.status}, not running")
        try:
            directory, version = _freezer.freezer_dir(
                self.proc_root, self.cgroup_root, info.init_pid, info.id
            )
            _freezer.set_frozen(directory, version, freeze)
        except OSError as exc:
            raise ActionError(f"container {info.id[:12]}: cgroup freezer: {exc}") from None

    def pause(self, info: ContainerInfo) -> None:
        self._freeze(info, True)

    def unpause(self, info: ContainerInfo) -> None:
        self._freeze(info, False)

    def ping(self) -> None:
        self.call("Version", pb.VersionRequest(version="v1"), pb.VersionResponse, timeout=5)

    def close(self) -> None:
        self.channel.close()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _env(detail: dict[str, Any]) -> list[str]:
    """The container's configured environment (containerd: ``config.envs``; CRI-O and others:
    the OCI spec's ``process.env``)."""
    config = detail.get("config") if isinstance(detail.get("config"), dict) else {}
    envs = config.get("envs") if config else None
    if isinstance(envs, list):
        return [f"{e.get('key', '')}={e.get('value', '')}" for e in envs if isinstance(e, dict)]
    spec = detail.get("runtimeSpec") if isinstance(detail.get("runtimeSpec"), dict) else {}
    env = (spec.get("process") or {}).get("env") if spec else None
    return [str(e) for e in env] if isinstance(env, list) else []


def _redacted(document: dict[str, Any]) -> dict[str, Any]:
    doc = redacted_copy(document, ("info", "info", "runtimeSpec", "process", "env"))
    config = ((doc.get("info") or {}).get("info") or {}).get("config")
    for env in (config or {}).get("envs") or []:
        if isinstance(env, dict) and "value" in env:
            env["value"] = REDACTED
    return doc
