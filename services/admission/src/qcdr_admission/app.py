"""The admission service's FastAPI application: ``POST /validate`` (the webhook, no bearer token,
TLS from :mod:`qcdr_admission.tls` when served by ``qcdr-admission serve``), the decision log API,
health and metrics.

The lifespan owns the decision log's background writer and the outbox relay that publishes
``admission:decisions``. The engine the webhook asks is ``app.state.admission_engine``: the policy
store of :mod:`qcdr_admission.policies.lifespan` (PSS, then the admission policies, swapped as a
whole when they change), or the engine a caller passes.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_session_factory
from qcdr_common.retention import AgeRule, OutboxRule, RetentionLoop, Rule
from qcdr_common.service_app import create_service_app
from qcdr_common.streams.outbox import OutboxRelay
from qcdr_common.streams.runner import in_background

from qcdr_admission.db.base import OUTBOX
from qcdr_admission.decisions.router import router as decisions_router
from qcdr_admission.decisions.writer import DecisionLog
from qcdr_admission.engine import Engine, PssConfig, PssEngine
from qcdr_admission.settings import AdmissionSettings, get_settings
from qcdr_admission.webhook.router import PATH as VALIDATE_PATH
from qcdr_admission.webhook.router import WebhookFastPath
from qcdr_admission.webhook.router import route as validate_route


def retention_rules(settings: AdmissionSettings) -> list[Rule]:
    """Decisions by the time the webhook answered, and published outbox rows."""
    return [
        AgeRule("admission_decisions", "time", settings.decisions_retention_s),
        OutboxRule(OUTBOX, settings.outbox_retention_s),
    ]


def create_app(
    settings: AdmissionSettings | None = None,
    *,
    auth: ApiAuthSettings | None = None,
    engine: Engine | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(settings, title="qcdr admission", auth=auth, public_paths=(VALIDATE_PATH,))
    # first, so the webhook is matched before anything else
    app.router.routes.insert(0, validate_route)
    app.include_router(decisions_router)
    app.state.admission_engine = engine if engine is not None else PssEngine(PssConfig())
    app.state.decision_log = None
    # outermost: POST /validate is answered before auth, the instrumentator and routing
    app.add_middleware(WebhookFastPath, state=app.state)
    common_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with common_lifespan(app), AsyncExitStack() as stack:  # engine, Redis, readiness checks
            app.state.sessions = make_session_factory(app.state.engine)
            if settings.decisions_enabled:
                relay = OutboxRelay.from_settings(app.state.engine, app.state.redis, OUTBOX, settings)
                app.state.relay = relay
                log = DecisionLog(
                    app.state.engine,
                    cluster_id=settings.cluster_id,
                    flush_s=settings.decisions_flush_s,
                    batch=settings.decisions_batch,
                    max_pending=settings.decisions_queue,
                    on_written=relay.notify if settings.relay_in_app else None,
                )
                # entered first, so it stops last: the writer's final flush still has the engine
                await stack.enter_async_context(in_background("admission-decision-log", log.run))
                if settings.relay_in_app:
                    await stack.enter_async_context(in_background("admission-outbox-relay", relay.run))
                retention = RetentionLoop(
                    app.state.engine,
                    retention_rules(settings),
                    service="admission",
                    interval_s=settings.retention_interval_s,
                )
                await stack.enter_async_context(in_background("admission-retention", retention.run))
                app.state.decision_log = log
            # everything loaded so far lives as long as the process: out of the collector's
            # full passes, which otherwise scan it again and again under load
            gc.freeze()
            yield

    app.router.lifespan_context = lifespan
    if engine is None:
        # the admission policies (their API, the policy store that becomes app.state.admission_engine:
        # PSS then the policies, reloaded without restart), the image-status cache and the runtime
        # findings reader; a caller passing its own engine (tests, benchmarks) gets PSS only
        from qcdr_admission.policies.lifespan import install_policies

        install_policies(app, settings)
    return app
