"""The node agent's HTTP side: ``/healthz`` (the process runs), ``/readyz`` (Redis and the Docker
Engine answer) and ``/metrics`` (Prometheus), served beside the consumer in the same event loop.
No other route: the agent takes work only from its stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from qcdr_common.health import Check, health_router


def create_app(readiness: dict[str, Check]) -> FastAPI:
    app = FastAPI(title="qcdr node agent", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.readiness_checks = readiness
    app.include_router(health_router())

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the agent's runner owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: FastAPI, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set."""
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopped.cancel()
    await task
    if not stop.is_set():  # the server ended on its own (port taken?): the agent stops too
        raise RuntimeError(f"the HTTP server on {host}:{port} stopped")
