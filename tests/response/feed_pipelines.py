"""Shared by the tests of the feed-driven pipelines (resolve-and-deny, the threat-intel blocklist):
a scratch database with response's and ingest's migrations (their input is ingest's real views),
plain SQL on it, and the Kubernetes API test server validating against ../shared/schemas."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.plugin import scratch_database
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.db import upgrade


@contextmanager
def migrated_database(base_database_url: str, prefix: str) -> Iterator[str]:
    from qcdr_ingest.db import upgrade as ingest_upgrade  # tests may import ingest; src may not

    with scratch_database(base_database_url, prefix) as url:
        upgrade(url)
        ingest_upgrade(url)
        yield url


async def run_sql(url: str, statement: str, *rows: tuple[Any, ...]) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        if rows:
            await connection.executemany(statement, rows)
        else:
            await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def validating_k8s(shared_path: Path) -> Iterator[K8sTestServer]:
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    with server.serve():
        yield server
