"""pytest plugin: real PostgreSQL and Redis for every package's tests.

Loaded with ``-p qcdr_common.testing.plugin``. Each xdist worker gets its own database and a
unique Redis key prefix, so parallel workers never see each other's rows or streams.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qcdr_common.testing.redis_keys import delete_prefixed_keys
from qcdr_common.testing.services import ThrowawayServers, resolve_database_url, resolve_redis_url


def shared_dir() -> Path | None:
    """The team's ``shared/`` folder (schemas, corpora), beside the checkout or from QCDR_SHARED_DIR."""
    env = os.environ.get("QCDR_SHARED_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared"
        if (parent / "pyproject.toml").exists() and (parent / "libs").is_dir() and candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_path() -> Path:
    """``../shared``; skips with a visible reason only when absent and ``CI`` is not set."""
    path = shared_dir()
    if path is None or not (path / "schemas").is_dir():
        if os.environ.get("CI"):
            pytest.fail("../shared (upstream schemas and corpora) is missing, and CI is set")
        pytest.skip("../shared is absent: upstream schema/corpus checks cannot run here")
    return path


@pytest.fixture(scope="session")
def _throwaway_servers() -> Iterator[ThrowawayServers]:
    servers = ThrowawayServers()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def base_database_url(_throwaway_servers: ThrowawayServers) -> str:
    return resolve_database_url(_throwaway_servers)


@pytest.fixture(scope="session")
def redis_url(_throwaway_servers: ThrowawayServers) -> str:
    return resolve_redis_url(_throwaway_servers)


def _admin_sql(base_database_url: str, sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(base_database_url.replace("+asyncpg", ""))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def scratch_database(base_database_url: str, prefix: str = "qcdr_scratch") -> Iterator[str]:
    """A new, empty database on the test server (its URL), dropped afterwards whatever happened."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_sql(base_database_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{base_database_url.rpartition('/')[0]}/{name}"
    finally:
        _admin_sql(base_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(base_database_url: str, qcdr_worker: str) -> Iterator[str]:
    """A database of its own for this xdist worker, created fresh and dropped at the end."""
    with scratch_database(base_database_url, f"qcdr_test_{qcdr_worker}") as url:
        yield url


@pytest.fixture
def scratch_database_url(base_database_url: str) -> Iterator[str]:
    """An empty database of one test's own: for tests that count rows or migrate down and up."""
    with scratch_database(base_database_url) as url:
        yield url


@pytest.fixture(scope="session")
def qcdr_worker(request: pytest.FixtureRequest) -> str:
    """xdist's worker id when running in parallel, ``master`` otherwise."""
    return str(getattr(request.config, "workerinput", {}).get("workerid", "master"))


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix no other test uses, so stream and group names never collide.

    Its keys are deleted afterwards when the test used Redis: the CI machine's Redis lives on from
    run to run, and each crash test alone used to leave ~70 MB of streams behind."""
    prefix = f"qcdr-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    if "redis_url" in request.fixturenames:
        delete_prefixed_keys(request.getfixturevalue("redis_url"), prefix)


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[object]:
    """An asyncio client; ``redis_prefix`` deletes the test's keys after it is closed."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a ``slow`` test first, each file's tests kept together and in order.

    With ``-n N --dist loadfile`` this order only counts under ``--no-loadscope-reorder``: by
    default xdist re-sorts files by their number of tests, so the one-test slow files run last.
    Measured 2026-12-06 on 2 cores with 2 workers: both orders take about 14.5 minutes (the
    order of the files is not what limits the suite), and running the heavy files first, beside
    each other, failed two timing- and order-sensitive tests, so ``make test`` keeps xdist's
    default."""

    def file_of(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow = {file_of(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: 0 if file_of(item) in slow else 1)


def pytest_configure(config: pytest.Config) -> None:
    _hypothesis_without_deadline()
    _kubernetes_validate_reads_each_schema_once()


def _hypothesis_without_deadline() -> None:
    """Hypothesis without its per-example deadline: on 2 busy cores a 200 ms deadline fails a
    correct property test now and then. Speed is measured in bench/, never asserted in tests."""
    try:
        from hypothesis import settings
    except ImportError:  # the plugin also serves environments without hypothesis
        return
    settings.register_profile("qcdr", deadline=None)
    settings.load_profile("qcdr")


def _kubernetes_validate_reads_each_schema_once() -> None:
    """``kubernetes_validate.validate`` parses the version's 1.3 MB ``_definitions.json`` on every
    call; the manifest tests call it for every object and every Kubernetes version from 1.30 on.
    Keeping the parsed files (read-only to the validator; errors are not cached) took their
    validation tests from 42 s to 5 s here, with the same verdicts."""
    try:
        from kubernetes_validate import utils
    except ImportError:
        return
    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
