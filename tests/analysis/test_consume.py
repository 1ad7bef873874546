"""``qcdr-analysis consume`` as a process runs it: the worker without HTTP until SIGTERM, with the
DGA model loaded in a thread at start rather than inside the first batch that holds a DNS query."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

import pytest
from qcdr_analysis import worker as analysis_worker

from tests.analysis.conftest import analysis_settings

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]


async def _consume_until_warmed(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[str]:
    """Run ``consume`` until it started its workers (and warmed, if it does), then SIGTERM it."""
    warmed: list[str] = []
    threads: list[str] = []

    def warm() -> None:
        threads.append(threading.current_thread().name)
        warmed.append("dga")

    started = asyncio.Event()
    real = analysis_worker.elected_worker

    def elected(*args: Any, **kwargs: Any) -> Any:
        started.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis_worker, "get_settings", lambda: settings)
    monkeypatch.setattr(analysis_worker, "warm_classifier", warm)
    monkeypatch.setattr(analysis_worker, "elected_worker", elected)
    task = asyncio.create_task(analysis_worker.consume())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.3)  # the workers start, the warm thread runs
    signal.raise_signal(signal.SIGTERM)  # the handler consume installed sets its stop event
    await asyncio.wait_for(task, 15)
    assert all(name != threading.main_thread().name for name in threads)  # never on the loop
    return warmed


async def test_consume_loads_the_dga_model_in_a_thread_at_start(
    monkeypatch: pytest.MonkeyPatch, db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = analysis_settings(database_url=db, redis_url=redis_url, redis_prefix=redis_prefix)
    assert await _consume_until_warmed(monkeypatch, settings) == ["dga"]


async def test_consume_without_the_dga_detector_loads_no_model(
    monkeypatch: pytest.MonkeyPatch, db: str, redis_url: str, redis_prefix: str
) -> None:
    settings = analysis_settings(
        database_url=db, redis_url=redis_url, redis_prefix=redis_prefix, disabled_detectors=frozenset({"dga"})
    )
    assert await _consume_until_warmed(monkeypatch, settings) == []
