"""Wiring the federation controller into the hub app: ``install_controller(app, settings)``
(called by ``install_hub`` when ``QCDR_FEDERATION_CONTROLLER`` is on) runs it beside the app,
``app.state.federation_controller``; ``run_controller`` runs it alone (a CLI command)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import User
from lightkube.core.exceptions import ConfigError
from qcdr_common.db import make_engine, make_session_factory
from qcdr_common.logging import get_logger
from qcdr_common.streams.runner import in_background
from redis.asyncio import Redis

from qcdr_federation.hub.controller.controller import Controller
from qcdr_federation.hub.policies.notify import notify_placements_changed
from qcdr_federation.settings import FederationSettings

log = get_logger(__name__)

FIELD_MANAGER = "qcdr-federation"


class ControllerConfigError(RuntimeError):
    """No usable Kubernetes configuration for the controller (one line, fit for a start-up error)."""


def kube_client(settings: FederationSettings) -> AsyncClient:
    """A lightkube client for the hub's own cluster: ``QCDR_KUBECONFIG``, else the pod's service
    account (``QCDR_KUBE_IN_CLUSTER`` or running in a pod). Proxy variables are not used: the API
    server is reached directly."""
    try:
        if settings.kubeconfig is not None:
            config = KubeConfig.from_file(settings.kubeconfig)
        elif settings.kube_in_cluster or os.environ.get("KUBERNETES_SERVICE_HOST"):
            config = KubeConfig.from_service_account()
        else:
            raise ControllerConfigError(
                "QCDR_FEDERATION_CONTROLLER needs a cluster: set QCDR_KUBECONFIG or QCDR_KUBE_IN_CLUSTER=true"
            )
        single = config.get()
    except (ConfigError, KeyError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ControllerConfigError(
            f"invalid Kubernetes configuration for the controller: {detail}"
        ) from None
    if single is None:
        raise ControllerConfigError("the kubeconfig has no usable context")
    if single.user is None:  # lightkube asserts a user entry exists; an empty one means "no auth"
        single = single._replace(user=User())
    return AsyncClient(config=single, trust_env=False, field_manager=FIELD_MANAGER)


def install_controller(app: FastAPI, settings: FederationSettings) -> None:
    """Run the controller in the app's lifespan (when the role's loops run in the app:
    ``QCDR_FEDERATION_CONSUME_IN_APP``). A missing Kubernetes configuration fails the start-up."""
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with outer(app):
            if not settings.consume_in_app:
                yield
                return
            if not hasattr(app.state, "sessions"):
                app.state.sessions = make_session_factory(app.state.engine)
            client = kube_client(settings)

            async def notify() -> None:
                await notify_placements_changed(app)

            controller = Controller(client, app.state.sessions, settings, notify=notify)
            app.state.federation_controller = controller
            try:
                async with in_background("federation-controller", controller.run):
                    yield
            finally:
                await client.close()

    app.router.lifespan_context = lifespan


async def run_controller(settings: FederationSettings, stop: asyncio.Event) -> None:
    """The controller alone until ``stop`` (its own engine; placements are announced to the other
    hub replicas over Redis pub/sub)."""
    engine = make_engine(settings.database_url.get_secret_value())
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    client = kube_client(settings)

    async def notify() -> None:
        await notify_placements_changed(redis, prefix=settings.redis_prefix)

    try:
        await Controller(client, make_session_factory(engine), settings, notify=notify).run(stop)
    finally:
        await client.close()
        await redis.aclose()
        await engine.dispose()
