"""Running the node agent: the consumer of this node's stream and the HTTP side, until SIGTERM."""

from __future__ import annotations

import asyncio
import functools

import docker
from qcdr_common.logging import get_logger
from qcdr_common.streams.consumer import StreamConsumer
from qcdr_common.streams.runner import run_until_stopped
from redis.asyncio import Redis

from qcdr_response.actions.base import ActionError
from qcdr_response.actions.node._bundle import private_dir
from qcdr_response.actions.node._context import NodeContext
from qcdr_response.actions.node._cri.client import CriRuntime
from qcdr_response.actions.node._docker import DockerRuntime
from qcdr_response.actions.node._runtime import ContainerRuntime
from qcdr_response.node_agent import app as http
from qcdr_response.node_agent.agent import NodeAgent
from qcdr_response.node_agent.settings import NodeAgentSettings

log = get_logger(__name__)


def make_runtime(settings: NodeAgentSettings) -> ContainerRuntime:
    """The configured runtime; ``auto`` takes CRI when its socket answers (kubelet's runtime on
    most nodes; a node with cri-dockerd has Docker's containerd without CRI), else Docker."""
    if settings.container_runtime != "docker":
        cri = CriRuntime(
            settings.cri_endpoint,
            timeout_s=settings.docker_timeout_s,
            proc_root=settings.proc_root,
            cgroup_root=settings.cgroup_root,
        )
        if settings.container_runtime == "cri":
            return cri
        try:
            cri.ping()
            return cri
        except ActionError as exc:
            log.info("no CRI runtime, using Docker", endpoint=settings.cri_endpoint, reason=exc.reason)
            cri.close()
    client = docker.DockerClient(base_url=settings.docker_host, timeout=settings.docker_timeout_s)
    return DockerRuntime(client)


def make_context(settings: NodeAgentSettings) -> NodeContext:
    return NodeContext(
        runtime=make_runtime(settings),
        node=settings.node_name,
        quarantine_root=private_dir(settings.quarantine_root),
        forensics_root=private_dir(settings.forensics_root),
        proc_root=settings.proc_root,
        protected_namespaces=frozenset(settings.protected_namespaces),
        allow_unlabelled=settings.allow_unlabelled_containers,
        max_quarantine_bytes=settings.max_quarantine_bytes,
        max_forensics_file_bytes=settings.max_forensics_file_bytes,
        max_forensics_total_bytes=settings.max_forensics_total_bytes,
    )


async def run(
    settings: NodeAgentSettings,
    *,
    ctx: NodeContext | None = None,
    stop: asyncio.Event | None = None,
    signals: bool = True,
) -> None:
    """Consume ``response:node-actions:<node>`` and serve /healthz, /readyz, /metrics until
    ``stop`` is set (SIGTERM/SIGINT when ``signals``): the request in hand is finished first."""
    owned = ctx is None  # a context passed in is closed by whoever made it
    ctx = ctx or make_context(settings)
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    agent = NodeAgent(
        redis,
        ctx,
        prefix=settings.redis_prefix,
        cluster_id=settings.cluster_id,
        maxlen=settings.stream_maxlen,
        intent_ttl_s=settings.intent_ttl_s,
    )
    consumer = StreamConsumer.from_settings(
        redis, settings, stream=agent.stream, group=settings.agent_group, handler=agent
    )

    async def redis_ping() -> None:
        await redis.ping()

    async def runtime_ping() -> None:
        await asyncio.to_thread(ctx.runtime.ping)

    workers = [consumer.run]
    if settings.http_port:
        app = http.create_app({"redis": redis_ping, ctx.runtime.name: runtime_ping})
        workers.append(functools.partial(http.serve, app, settings.http_host, settings.http_port))
    log.info(
        "node agent started",
        node=ctx.node,
        runtime=ctx.runtime.name,
        stream=agent.stream,
        group=settings.agent_group,
    )
    try:
        await run_until_stopped(*workers, stop=stop, signals=signals)
    finally:
        await redis.aclose()
        if owned:
            ctx.runtime.close()
        log.info("node agent stopped", node=ctx.node)
