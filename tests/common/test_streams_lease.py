"""The Redis lease: one holder at a time, renewed and released only by its holder, gone after its TTL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from qcdr_common.streams.lease import RedisLease

pytestmark = pytest.mark.redis


async def holder(redis: Any, key: str) -> str | None:
    value = await redis.get(key)
    return value.decode() if value is not None else None


async def test_one_holder_at_a_time(redis_client: Any, redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader"
    a = RedisLease(redis_client, key, "pod-a", ttl_s=30)
    b = RedisLease(redis_client, key, "pod-b", ttl_s=30)
    assert await a.acquire()
    assert await a.acquire()  # already its own: renewed
    assert not await b.acquire()
    assert await holder(redis_client, key) == a.holder
    assert await a.renew()
    assert not await b.renew()
    await b.release()  # not b's to give back
    assert await holder(redis_client, key) == a.holder
    await a.release()
    assert await holder(redis_client, key) is None
    assert await b.acquire()
    assert not await a.renew()  # a lost it: it cannot extend b's lease
    await a.release()
    assert await holder(redis_client, key) == b.holder


async def test_two_processes_with_one_name_are_two_holders(redis_client: Any, redis_prefix: str) -> None:
    key = f"{redis_prefix}:leader"
    first, copy = RedisLease(redis_client, key, "analysis", 30), RedisLease(redis_client, key, "analysis", 30)
    assert first.holder != copy.holder
    assert await first.acquire()
    assert not await copy.acquire()


async def test_an_unrenewed_lease_expires_and_renewal_extends_it(
    redis_client: Any, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:leader"
    # renewal starts the TTL over: shown on a long lease's remaining time (a short one renewed on
    # time would hold only as long as a busy machine kept the pace)
    kept = RedisLease(redis_client, key, "pod-a", ttl_s=30)
    b = RedisLease(redis_client, key, "pod-b", ttl_s=0.4)
    assert await kept.acquire()
    await asyncio.sleep(0.5)
    assert await redis_client.pttl(key) <= 29_500
    assert await kept.renew()
    assert await redis_client.pttl(key) > 29_500  # 30 s again
    assert not await b.acquire()
    await kept.release()

    # unrenewed, a lease is gone after its TTL: another takes it, and the first cannot renew it
    a = RedisLease(redis_client, key, "pod-a", ttl_s=0.4)
    assert await a.acquire()
    await asyncio.sleep(0.6)
    assert await b.acquire()
    assert not await a.renew()
