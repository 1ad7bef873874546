"""Wiring the policies into the admission app: ``install_policies(app, settings)`` adds the
router and, in the lifespan, the policy store (``app.state.policy_store``, also set as
``app.state.admission_engine``: the Engine the webhook evaluates with), the image-status cache
and the runtime findings reader, with their readiness checks (``policies``, ``runtime``).
Call it from ``create_app`` after ``create_service_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from qcdr_common.db import make_session_factory
from qcdr_common.settings import CommonSettings
from qcdr_common.streams.runner import in_background

from qcdr_admission.engine import PssEngine
from qcdr_admission.policies.config import PolicySettings
from qcdr_admission.policies.image_status import ImageStatusCache
from qcdr_admission.policies.reload import PolicyStore
from qcdr_admission.policies.router import router
from qcdr_admission.runtime.reader import FindingsReader
from qcdr_admission.runtime.state import RuntimeState


def install_policies(
    app: FastAPI,
    settings: CommonSettings,
    *,
    config: PolicySettings | None = None,
    pss: PssEngine | None = None,
) -> None:
    config = config if config is not None else PolicySettings()
    app.include_router(router)
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with outer(app):
            if not hasattr(app.state, "sessions"):
                app.state.sessions = make_session_factory(app.state.engine)
            images = ImageStatusCache()
            runtime = RuntimeState(
                window_s=config.runtime_window_s,
                min_severity=config.runtime_min_severity,
                max_open=config.runtime_max_open,
            )
            store = PolicyStore(
                app.state.sessions,
                pss=pss,
                images=images,
                runtime=runtime,
                built_in=config.builtin_policies,
                poll_s=config.policies_poll_s,
            )
            app.state.policy_store = store
            app.state.admission_engine = store  # what the webhook evaluates with
            app.state.image_status = images
            app.state.runtime_state = runtime
            checks = app.state.readiness_checks
            checks["policies"] = store.ready
            async with (
                in_background("admission-policies", store.run),
                in_background(
                    "admission-image-status",
                    lambda stop: images.run(app.state.engine, config.image_status_refresh_s, stop),
                ),
            ):
                if not config.runtime_enabled:
                    runtime.ready = True
                    yield
                    return
                reader = FindingsReader(
                    app.state.redis,
                    runtime,
                    prefix=settings.redis_prefix,
                    batch=config.runtime_batch,
                    block_ms=config.runtime_block_ms,
                )
                app.state.findings_reader = reader
                checks["runtime"] = reader.ready_check
                async with in_background("admission-runtime", reader.run):
                    yield

    app.router.lifespan_context = lifespan
