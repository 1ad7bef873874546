"""``qcdr demo``: the real client and generators against the local Qualys CDR API double."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.double import DoubleConfig, serve_double

from qcdr.pipeline import RunOptions
from qcdr.qualys_source import QualysSource

BUNDLED = Path(__file__).resolve().parents[2] / "examples" / "findings.json"

MainFn = Callable[[RunOptions, QualysSource], Coroutine[Any, Any, int]]


def run_demo(options: RunOptions, *, findings: Path | None, json_out: bool, main: MainFn) -> int:
    data = findings or BUNDLED
    if not data.is_file():
        raise FileNotFoundError(f"demo findings not found: {data} (run examples/generate_findings.py)")
    # The bundled file has fixed timestamps; the double shifts them so the newest is "now".
    config = DoubleConfig(findings=data, rebase_to_now=True)
    with serve_double(config) as base_url:
        settings = QualysSettings(
            username=config.username, password=SecretStr(config.password), gateway_url=base_url
        )
        source = QualysSource(settings, base_url)
        return asyncio.run(main(options, source))
