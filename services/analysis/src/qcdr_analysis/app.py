"""The analysis service's FastAPI application: the findings API, and (``consume_in_app``) the
``ingest:events`` consumer and outbox relay running beside it in the same process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_session_factory
from qcdr_common.gc_tuning import tune_gc
from qcdr_common.service_app import create_service_app
from qcdr_common.streams.runner import in_background

from qcdr_analysis.correlation.patterns import load_patterns
from qcdr_analysis.correlation.router import router as chains_router
from qcdr_analysis.dns.classifier import warm_classifier
from qcdr_analysis.dns.router import router as dns_router
from qcdr_analysis.findings.router import router as findings_router
from qcdr_analysis.profiles.router import router as profiles_router
from qcdr_analysis.settings import AnalysisSettings, get_settings
from qcdr_analysis.worker import elected_worker, make_detectors


def create_app(settings: AnalysisSettings | None = None, *, auth: ApiAuthSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # a bad detector configuration or rule file fails here, before the app accepts anything
    detectors = make_detectors(settings) if settings.consume_in_app else None
    # /v1/dns/classify asks a question with a body and writes nothing: read scope.
    app = create_service_app(settings, title="qcdr analysis", auth=auth, read_paths=("/v1/dns/classify",))
    app.include_router(findings_router)
    app.include_router(chains_router)
    # the partial-chains view rebuilds the engine from the checkpoint with the same patterns
    app.state.chain_patterns = (
        load_patterns(settings.correlation_patterns_dir) if settings.correlation_enabled else None
    )
    app.include_router(profiles_router)
    app.include_router(dns_router)
    common_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with common_lifespan(app):  # engine, Redis, readiness checks
            app.state.sessions = make_session_factory(app.state.engine)
            # The DGA model and its lexicon take a few seconds to load: load them now, beside
            # start-up, so the first /v1/dns/classify (ingest waits 2 s) does not pay for it.
            warm = asyncio.create_task(asyncio.to_thread(warm_classifier))
            app.state.dga_warm = warm
            if detectors is None:
                yield
                return
            worker = elected_worker(settings, app.state.engine, app.state.redis, detectors=detectors)
            if settings.gc_tuning:
                tune_gc()
            async with in_background("analysis-worker", worker):
                yield

    app.router.lifespan_context = lifespan
    return app
