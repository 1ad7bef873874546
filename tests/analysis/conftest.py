"""Fixtures for the analysis tests: a migrated database (analysis and ingest), factories."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from qcdr_analysis.db import upgrade
from qcdr_analysis.settings import AnalysisSettings, get_settings
from qcdr_common.contracts.events.v1 import SecurityEvent
from qcdr_common.db import make_engine
from qcdr_common.streams import Envelope, new_envelope
from qcdr_common.testing.plugin import scratch_database
from sqlalchemy.ext.asyncio import AsyncEngine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = count(1)

ANALYSIS_TABLES = (
    "analysis_findings",
    "analysis_received",
    "analysis_outbox",
    "analysis_profiles",
    "analysis_profile_workloads",
    "analysis_baselines",
    "analysis_models",
    "analysis_input_clocks",
)
# ingest's tables behind the view and the reputation cache, which the intel tests fill
INTEL_TABLES = ("intel_indicators", "intel_reputation", "intel_domains")


@pytest.fixture(scope="session")
def analysis_database_url(base_database_url: str, qcdr_worker: str) -> Iterator[str]:
    """A database of this worker's own with the real analysis and ingest migrations (ingest's
    gives the ``ingest_intel_listed`` view analysis reads). Tests here commit for real (the worker,
    the relay, the app), so ``db`` empties the tables after each test instead of rolling back."""
    from qcdr_ingest.db import upgrade as ingest_upgrade  # tests may import ingest; src may not

    with scratch_database(base_database_url, f"qcdr_analysis_{qcdr_worker}") as url:
        upgrade(url)
        ingest_upgrade(url)
        yield url


@pytest.fixture
async def db(analysis_database_url: str) -> AsyncIterator[str]:
    """The migrated database, emptied of analysis rows and intel indicators after the test."""
    yield analysis_database_url
    connection = await asyncpg.connect(analysis_database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(f"TRUNCATE {', '.join(ANALYSIS_TABLES + INTEL_TABLES)} RESTART IDENTITY")
    finally:
        await connection.close()


@pytest.fixture
async def pg(db: str) -> AsyncIterator[AsyncEngine]:
    """An SQLAlchemy engine on ``db`` (the detectors' own repositories take sessions of it)."""
    engine = make_engine(db)
    yield engine
    await engine.dispose()


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def analysis_settings(**overrides: Any) -> AnalysisSettings:
    """Settings from arguments only; the stream tuning is test-fast."""
    values: dict[str, Any] = {
        "consume_in_app": False,
        "stream_block_ms": 50,
        "stream_claim_idle_ms": 300,
        "stream_max_deliveries": 3,
        "outbox_poll_s": 0.02,
        "consumer_name": "test-consumer",
        "consume_metrics_port": 0,
        "gc_tuning": False,  # the test process would freeze every test's leftovers
    }
    values.update(overrides)
    return AnalysisSettings(_env_file=None, **values)  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- factories


def make_event(**overrides: Any) -> SecurityEvent:
    """A Falco-like alert in namespace ``payments`` (override anything; ``namespace``, ``pod``
    and ``cluster`` go into the workload)."""
    n = next(_ids)
    data: dict[str, Any] = {
        "id": f"event-{n:06d}",
        "source": "falco",
        "category": "Terminal shell in container",
        "severity": "medium",
        "event_time": T0,
        "message": "A shell was spawned in a container",
        "workload": {"namespace": "payments", "pod": "api-7d9f-x2", "container": "api", "cluster": "prod"},
        "techniques": ["T1059"],
    }
    for key, value in overrides.items():
        if key in {"namespace", "pod", "cluster", "container"}:
            data["workload"] = {**data["workload"], key: value}
        else:
            data[key] = value
    return SecurityEvent.model_validate(data)


def tetragon_event(raw: dict[str, Any], **overrides: Any) -> SecurityEvent:
    """A Tetragon export line as ingest stores it (the line in ``raw``; namespace and pod from it)."""
    body = next(v for k, v in raw.items() if k.startswith("process_"))
    pod = body.get("process", {}).get("pod") or {}
    data: dict[str, Any] = {
        "id": f"tetragon-{next(_ids):06d}",
        "source": "tetragon",
        "category": next(k for k in raw if k.startswith("process_")),
        "severity": "info",
        "event_time": T0,
        "workload": {"namespace": pod.get("namespace"), "pod": pod.get("name")},
        "raw": raw,
    }
    data.update(overrides)
    return SecurityEvent.model_validate(data)


def event_envelope(event: SecurityEvent | dict[str, Any], **kwargs: Any) -> Envelope:
    occurred = event.event_time if isinstance(event, SecurityEvent) else T0
    return new_envelope(
        "ingest.event_observed", event, source="ingest", cluster_id="test", occurred_at=occurred, **kwargs
    )


def load_events(path: Path) -> list[dict[str, Any]]:
    """A corpus file: one JSON document, or JSON lines."""
    text = path.read_text("utf-8")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tetragon_corpus(shared_path: Path) -> Path:
    path = shared_path / "corpora" / "tetragon"
    if not path.is_dir():
        pytest.skip("shared/corpora/tetragon is absent")
    return path
