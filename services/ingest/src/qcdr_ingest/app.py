"""The ingest service's FastAPI application.

Routes: ``POST /v1/events/{source}``, ``GET /v1/events``, ``GET /v1/events/{event_id}``,
``GET /v1/sources``, ``POST /v1/metrics/{source}``, ``GET /v1/intel/feeds``,
``GET /v1/intel/lookup/{ip}``, ``POST /v1/dns``, ``POST``/``GET /v1/dns/verdict`` (bearer
token; the verdict needs read only, the other POSTs write), plus the shared ``/healthz``,
``/readyz``, ``/metrics`` and ``/openapi.json``.

The lifespan extends the shared one (engine, Redis, httpx) with a session factory and, unless
``QCDR_BACKGROUND_WORKERS=false``, the background workers of :mod:`qcdr_ingest.workers`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_session_factory
from qcdr_common.gc_tuning import tune_gc
from qcdr_common.logging import get_logger
from qcdr_common.service_app import create_service_app

from qcdr_ingest.dns.dga_client import AnalysisDgaScorer
from qcdr_ingest.dns.router import router as dns_router
from qcdr_ingest.events.ratelimit import TokenBuckets
from qcdr_ingest.events.registry import load_adapters
from qcdr_ingest.events.router import router as events_router
from qcdr_ingest.intel.abuseipdb import AbuseIPDBSettings
from qcdr_ingest.intel.reputation_queue import reputation_freshness
from qcdr_ingest.intel.router import router as intel_router
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.samples.registry import load_sample_adapters
from qcdr_ingest.samples.router import router as samples_router
from qcdr_ingest.settings import IngestSettings, get_qualys_settings, get_settings
from qcdr_ingest.workers import build_workers, feed_specs

log = get_logger(__name__)
STOP_GRACE_S = 10.0


def create_app(
    settings: IngestSettings | None = None,
    *,
    qualys: QualysSettings | None = None,
    auth: ApiAuthSettings | None = None,
    abuseipdb: AbuseIPDBSettings | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    abuseipdb = abuseipdb or AbuseIPDBSettings()
    # Read every configuration here, not in the lifespan or on a first request: build_app turns a
    # mistake (an unknown QUALYS_PLATFORM, a bad feeds file) into one line and exit 2; later it was
    # a traceback at start-up, or a 500 on every DNS verdict.
    feeds = feed_specs(settings)
    qualys_settings = (qualys or get_qualys_settings()) if settings.background_workers else None
    # the DNS verdict is a question asked with a body: read-only tokens may ask it
    app = create_service_app(settings, title="qcdr ingest", auth=auth, read_paths=("/v1/dns/verdict",))
    app.include_router(events_router)
    app.include_router(samples_router)
    app.include_router(intel_router)
    app.include_router(dns_router)
    app.state.adapters = load_adapters()
    app.state.sample_adapters = load_sample_adapters()
    app.state.feed_specs = feeds
    app.state.rate_limiter = TokenBuckets(settings.events_rate_per_s, settings.events_rate_burst)
    app.state.reputation_fresh_s = reputation_freshness(settings.reputation_enabled, abuseipdb)
    scorer = (
        AnalysisDgaScorer(
            settings.dga_analysis_url,
            settings.dga_token(),
            timeout_s=settings.dga_timeout_s,
            cache_s=settings.dga_cache_s,
        )
        if settings.dga_analysis_url
        else None
    )
    app.state.dns_dga_scorer = scorer
    shared_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with shared_lifespan(app) as state:
            sessions = make_session_factory(app.state.engine)
            app.state.session_factory = sessions
            app.state.relay = None
            app.state.workers = None
            stop = asyncio.Event()
            tasks: list[asyncio.Task[None]] = []
            if qualys_settings is not None:  # settings.background_workers
                workers = build_workers(
                    settings,
                    qualys_settings,
                    app.state.engine,
                    app.state.redis,
                    sessions,
                    abuseipdb=abuseipdb,
                    feeds=feeds,
                )
                app.state.relay, app.state.workers = workers.relay, workers
                tasks = [asyncio.create_task(run(stop)) for run in workers.runners()]
                log.info("ingest workers started", workers=workers.describe())
            if settings.gc_tuning:
                tune_gc()
            try:
                yield state
            finally:
                stop.set()
                if tasks:
                    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if scorer is not None:
                    await scorer.aclose()

    app.router.lifespan_context = lifespan
    return app
