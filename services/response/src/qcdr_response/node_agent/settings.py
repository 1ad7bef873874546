"""Settings of the node agent (env prefix ``QCDR_``; the node name also from ``NODE_NAME``, which
the DaemonSet sets from the downward API)."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from qcdr_common.settings import CommonSettings

from qcdr_response.actions import validation
from qcdr_response.actions.base import ActionError
from qcdr_response.actions.node._context import DEFAULT_PROTECTED, MiB
from qcdr_response.actions.node._cri.client import DEFAULT_ENDPOINT
from qcdr_response.node_agent import streams


class NodeAgentSettings(CommonSettings):
    service_name: str = "node-agent"
    http_port: int = Field(default=9102, ge=0, le=65535, description="/healthz, /readyz and /metrics.")

    node_name: str = Field(
        default_factory=socket.gethostname,
        validation_alias=AliasChoices("QCDR_NODE_NAME", "NODE_NAME"),
        description="This node (spec.nodeName through the downward API): the stream it consumes.",
    )
    container_runtime: Literal["auto", "docker", "cri"] = Field(
        default="auto",
        description="cri: containerd or CRI-O through their CRI socket (most Kubernetes nodes); docker: "
        "the Docker Engine; auto: cri when cri_endpoint answers, else docker.",
    )
    cri_endpoint: str = Field(
        default=DEFAULT_ENDPOINT,
        validation_alias=AliasChoices("QCDR_CRI_ENDPOINT", "CONTAINER_RUNTIME_ENDPOINT"),
        description="The CRI socket (containerd's; CRI-O: unix:///var/run/crio/crio.sock).",
    )
    cgroup_root: Path = Field(
        default=Path("/sys/fs/cgroup"),
        description="The host's cgroup hierarchy (CRI has no pause: the agent freezes the cgroup).",
    )
    docker_host: str = Field(
        default="unix:///var/run/docker.sock",
        validation_alias=AliasChoices("QCDR_DOCKER_HOST", "DOCKER_HOST"),
        description="The Docker Engine API of this node.",
    )
    docker_timeout_s: int = Field(default=30, ge=1, le=600)
    proc_root: Path = Field(default=Path("/proc"), description="The host's /proc (the pod has hostPID).")
    quarantine_root: Path = Path("/var/lib/qcdr/quarantine")
    forensics_root: Path = Path("/var/lib/qcdr/forensics")
    protected_namespaces: tuple[str, ...] = Field(
        default=DEFAULT_PROTECTED, description="Never acted on (a JSON list in the environment)."
    )
    allow_unlabelled_containers: bool = Field(
        default=False, description="Also act on containers without kubelet's pod labels."
    )
    max_quarantine_bytes: int = Field(default=256 * MiB, ge=1)
    max_forensics_file_bytes: int = Field(default=16 * MiB, ge=0)
    max_forensics_total_bytes: int = Field(default=256 * MiB, ge=0)
    agent_group: str = Field(default=streams.GROUP, description="Consumer group on the node's stream.")
    intent_ttl_s: int = Field(default=streams.INTENT_TTL_S, ge=60)

    @field_validator("node_name")
    @classmethod
    def _node(cls, value: str) -> str:
        try:
            return validation.dns1123_subdomain(value, "node_name")
        except ActionError as exc:
            raise ValueError(exc.reason) from None


@lru_cache
def get_settings() -> NodeAgentSettings:
    return NodeAgentSettings()
