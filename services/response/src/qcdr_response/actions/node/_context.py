"""What node actions act with (``NodeContext``), and the checks every one of them makes first.

A node action names a container. Before anything else it must exist (else ``TargetGoneError``),
carry the pod labels kubelet puts on every container (unless the node allows unlabelled ones),
not belong to a protected namespace, still belong to the pod the finding named (pod UID), and
not be the agent's own container. The response service checks protected namespaces too; this is
defence in depth on the node.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qcdr_common.contracts.actions.v1 import ActionTarget

from qcdr_response.actions import validation
from qcdr_response.actions.base import ActionError, TargetGoneError
from qcdr_response.actions.node import _procfs
from qcdr_response.actions.node._runtime import ContainerInfo, ContainerRuntime

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_LABEL = "io.kubernetes.pod.name"
POD_UID_LABEL = "io.kubernetes.pod.uid"
DEFAULT_PROTECTED = ("kube-system", "kube-public", "kube-node-lease", "qualys-system", "qualys-node-agent")
MiB = 1024 * 1024

T = TypeVar("T")


@dataclass
class NodeContext:
    runtime: ContainerRuntime  # the Docker Engine or a CRI runtime (containerd, CRI-O)
    node: str
    quarantine_root: Path
    forensics_root: Path
    proc_root: Path = Path("/proc")
    protected_namespaces: frozenset[str] = frozenset(DEFAULT_PROTECTED)
    # containers without kubelet's pod labels are not pods: refused unless this is set
    allow_unlabelled: bool = False
    # node-wide ceilings; a request's parameters may ask for less, never for more
    max_quarantine_bytes: int = 256 * MiB
    max_forensics_file_bytes: int = 16 * MiB
    max_forensics_total_bytes: int = 256 * MiB
    # the agent itself, never a target: its host PID and (in a pod) its container id
    own_pid: int = field(default_factory=os.getpid)
    own_container_id: str | None = field(default_factory=lambda: _procfs.own_container_id(Path("/proc")))


@dataclass(frozen=True)
class Box:
    """The target container as checked: full id, state, init PID (host), pod identity."""

    runtime: ContainerRuntime
    info: ContainerInfo
    id: str
    name: str
    status: str
    init_pid: int
    namespace: str | None
    pod: str | None
    pod_uid: str | None

    def describe(self) -> dict[str, Any]:
        return {
            "container_id": self.id,
            "container": self.name,
            "status": self.status,
            "namespace": self.namespace,
            "pod": self.pod,
        }


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runtime clients and file copies block: run them on a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def load(ctx: NodeContext, target: ActionTarget, container_id: str | None = None) -> Box:
    """Find and check the target container (see the module docstring)."""
    cid = validation.container_id(container_id or target.container_id or "")
    info = await blocking(ctx.runtime.inspect, cid)
    full_id = info.id
    if not full_id.startswith(cid):  # a name or an ambiguous prefix answered: not what was named
        raise TargetGoneError(f"container {cid} does not exist (the runtime answered {full_id[:12]})")
    labels = info.labels
    namespace = labels.get(NAMESPACE_LABEL)
    if namespace is None and not ctx.allow_unlabelled:
        raise ActionError(f"container {cid} is not a Kubernetes pod's container (no {NAMESPACE_LABEL} label)")
    for ns in (namespace, target.namespace):
        if ns is not None and ns in ctx.protected_namespaces:
            raise ActionError(f"namespace {ns} is protected: no action on its containers")
    if target.namespace is not None and namespace is not None and target.namespace != namespace:
        raise ActionError(f"container {cid} belongs to namespace {namespace}, not {target.namespace}")
    pod_uid = labels.get(POD_UID_LABEL)
    if target.pod_uid is not None and pod_uid != target.pod_uid:
        raise TargetGoneError(f"container {cid} belongs to pod UID {pod_uid}, not {target.pod_uid}")
    if ctx.own_container_id and full_id == ctx.own_container_id:
        raise ActionError("the node agent does not act on its own container")
    init_pid = info.init_pid
    if init_pid and init_pid == ctx.own_pid:
        raise ActionError("the node agent does not act on its own process")
    return Box(
        runtime=ctx.runtime,
        info=info,
        id=full_id,
        name=info.name,
        status=info.status,
        init_pid=init_pid,
        namespace=namespace,
        pod=labels.get(POD_LABEL),
        pod_uid=pod_uid,
    )


def require_running(box: Box) -> None:
    if box.status not in ("running", "paused") or box.init_pid <= 0:
        raise ActionError(f"container {box.id[:12]} is {box.status}, not running")


async def status(box: Box) -> str:
    """The container's current status (asked again); ``TargetGoneError`` when it is gone."""
    return (await blocking(box.runtime.inspect, box.id)).status
