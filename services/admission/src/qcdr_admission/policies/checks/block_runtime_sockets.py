"""No hostPath that reaches a container runtime socket (Docker, containerd, CRI-O, cri-dockerd,
Podman, k3s): the socket, its directory, or any ancestor (``/run``, ``/``), compared on
canonical paths (``/var/run`` is ``/run``; ``//``, ``.``, ``..`` and trailing ``/`` removed)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import field_validator

from qcdr_admission.policies.checks._common import host_paths
from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.paths import canonical, first_overlap
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register

RUNTIME_PATHS = (
    "/run/docker.sock",
    "/run/docker",
    "/run/containerd",
    "/run/crio",
    "/run/cri-dockerd.sock",
    "/run/dockershim.sock",
    "/run/podman",
    "/run/k3s/containerd",
)


class Config(CheckConfig):
    extra_paths: tuple[str, ...] = ()

    @field_validator("extra_paths")
    @classmethod
    def _canonical(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(canonical(v) for v in values)


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    protected = RUNTIME_PATHS + config.extra_paths
    out = []
    for name, path in host_paths(ctx):
        hit = first_overlap(canonical(path), protected)
        if hit is not None:
            out.append(f'volume "{name}": hostPath {path!r} exposes the container runtime ({hit})')
    return out


register(PolicyCheck("block_runtime_sockets", "blockRuntimeSockets", Config, run, "no runtime sockets"))
