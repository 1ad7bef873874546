"""``qcdr demo``: the real client, feeds fetcher and generators against local doubles.

Everything the main job talks to is started on 127.0.0.1: the Qualys CDR API double with the
bundled findings, an HTTP server for the bundled (synthetic) threat-intel feeds, and the AbuseIPDB
double, so the demo needs neither credentials nor a network.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr
from qcdr_common.testing.asgi_server import serve_app
from qcdr_ingest.intel.abuseipdb_double import DEFAULT_KEY, serve_abuseipdb_double
from qcdr_ingest.intel.feeds import load_feeds
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.double import DoubleConfig, serve_double

from qcdr.intel_step import IntelOptions
from qcdr.pipeline import RunOptions
from qcdr.qualys_source import QualysSource

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUNDLED = EXAMPLES / "findings.json"
BUNDLED_FEEDS = EXAMPLES / "feeds.yaml"

MainFn = Callable[[RunOptions, QualysSource], Coroutine[Any, Any, int]]


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _served_feeds(feeds_file: Path, base_url: str) -> tuple[Any, ...]:
    """The bundled feed specs with their ``file:`` URLs turned into URLs of the local feed server."""
    root = feeds_file.parent.resolve()
    out = []
    for spec in load_feeds(feeds_file):
        path = Path(spec.url.removeprefix("file://"))
        out.append(spec.model_copy(update={"url": f"{base_url}/{path.relative_to(root).as_posix()}"}))
    return tuple(out)


def run_demo(
    options: RunOptions, *, findings: Path | None, json_out: bool, main: MainFn, threat_intel: bool = True
) -> int:
    data = findings or BUNDLED
    if not data.is_file():
        raise FileNotFoundError(f"demo findings not found: {data} (run examples/generate_findings.py)")
    # The bundled file has fixed timestamps; the double shifts them so the newest is "now".
    config = DoubleConfig(findings=data, rebase_to_now=True)
    with ExitStack() as stack:
        base_url = stack.enter_context(serve_double(config))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qcdr-demo-")))
        # A throwaway state dir: feed copies, indicator provenance and the reputation cache of this run.
        options.state_dir = state
        if threat_intel:
            feeds_app = FastAPI()
            # Starlette's static files answer ETag/Last-Modified and 304, like real feed servers.
            feeds_app.mount("/", StaticFiles(directory=BUNDLED_FEEDS.parent))
            feeds_url = stack.enter_context(serve_app(feeds_app, name="demo-feeds"))
            abuse_url = stack.enter_context(serve_abuseipdb_double(None))
            stack.enter_context(
                _environment(ABUSEIPDB_API_KEY=DEFAULT_KEY, QCDR_ABUSEIPDB_BASE_URL=abuse_url)
            )
            options.intel = IntelOptions(
                state_dir=state,
                feeds=_served_feeds(BUNDLED_FEEDS, feeds_url),
                never_block=options.generation.never_block,
            )
        settings = QualysSettings(
            username=config.username, password=SecretStr(config.password), gateway_url=base_url
        )
        return asyncio.run(main(options, QualysSource(settings, base_url)))
