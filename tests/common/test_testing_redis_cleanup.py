"""The test plugin leaves nothing behind in Redis: the CI machine's Redis outlives every run."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qcdr_common.testing.redis_keys import delete_prefixed_keys
from redis import Redis

from tests.integration.stack import Stack

pytest_plugins = ["pytester"]


@pytest.mark.redis
def test_delete_prefixed_keys_deletes_only_that_prefix(redis_url: str) -> None:
    mine, other = (f"qcdr-test-{uuid.uuid4().hex[:12]}" for _ in range(2))
    client = Redis.from_url(redis_url)
    try:
        for n in range(1_234):  # more than one SCAN page and one DEL batch
            client.set(f"{mine}:k{n}", n)
        client.xadd(f"{mine}-spoke:events", {"a": "1"})  # derived prefixes count too
        client.set(f"{other}:keep", 1)
        assert delete_prefixed_keys(redis_url, mine) == 1_235
        assert list(client.scan_iter(match=f"{mine}*")) == []
        assert client.get(f"{other}:keep") == b"1"
    finally:
        client.delete(f"{other}:keep")
        client.close()


@pytest.mark.redis
def test_a_test_using_redis_leaves_no_keys(pytester: pytest.Pytester, redis_url: str) -> None:
    marker = f"qcdr-test-plugin-{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(
        f"""
        from redis import Redis

        def test_writes(redis_url, redis_prefix):
            client = Redis.from_url(redis_url)
            client.set(redis_prefix + ":x", 1)
            client.xadd(redis_prefix + ":stream", {{"a": "1"}})
            client.set("{marker}", redis_prefix)  # tells the outer test which prefix it was
            client.close()
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "qcdr_common.testing.plugin",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=1)
    client = Redis.from_url(redis_url)
    try:
        prefix = client.get(marker)
        assert prefix is not None
        assert list(client.scan_iter(match=f"{prefix.decode()}*")) == []
    finally:
        client.delete(marker)
        client.close()


@pytest.mark.redis
def test_an_integration_stack_deletes_its_keys_when_closed(redis_url: str, tmp_path: Path) -> None:
    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"  # stacks may have prefixes of their own
    stack = Stack.create(
        tmp_path, database_url="postgresql+asyncpg://unused/x", redis_url=redis_url, prefix=prefix, token="t"
    )
    client = Redis.from_url(redis_url)
    try:
        client.xadd(f"{prefix}:ingest:events", {"a": "1"})
        stack.close()
        assert list(client.scan_iter(match=f"{prefix}*")) == []
    finally:
        client.close()
