"""Bulk XADD (publish_fields) against the real Redis: ids in the order given, each stream's
entries in order, runs longer than one script call, several streams in one call, trimming."""

from __future__ import annotations

from typing import Any, cast

import pytest
from qcdr_common.streams import publish_fields, stream_key
from qcdr_common.streams.producer import CHUNK
from redis.asyncio import Redis

pytestmark = [pytest.mark.redis]


@pytest.fixture
def redis(redis_client: object) -> Redis:
    return cast(Redis, redis_client)


async def test_entries_keep_their_order_per_stream_and_ids_their_input_order(
    redis: Redis, redis_prefix: str
) -> None:
    a, b = stream_key(redis_prefix, "p:a"), stream_key(redis_prefix, "p:b")
    # interleaved, more than one script call's worth for one stream, and varied field counts
    entries: list[tuple[str, dict[Any, Any]]] = []
    for i in range(2 * CHUNK + 7):
        entries.append((a, {b"type": b"t", b"data": f"a{i}".encode()}))
        if i % 3 == 0:
            entries.append((b, {"type": "t", "data": f"b{i}", "extra": i}))
    data = [str(f.get("data") or f[b"data"].decode()) for _, f in entries]
    ids = await publish_fields(redis, entries, maxlen=100_000)
    assert len(ids) == len(entries)
    stored: dict[str, dict[str, dict[bytes, bytes]]] = {}
    for key in (a, b):
        rows: Any = await redis.xrange(key)
        stored[key] = {i.decode(): fields for i, fields in rows}
    # each id names its own entry in its own stream
    assert [stored[k][i][b"data"].decode() for (k, _), i in zip(entries, ids, strict=True)] == data
    # and each stream holds its entries in the order given
    for key in (a, b):
        in_stream = [f[b"data"].decode() for f in stored[key].values()]
        assert in_stream == [d for (k, _), d in zip(entries, data, strict=True) if k == key]
    assert stored[b][ids[1]][b"extra"] == b"0"


async def test_nothing_to_publish_is_no_call(redis: Redis) -> None:
    assert await publish_fields(redis, [], maxlen=10) == []


async def test_maxlen_trims_approximately(redis: Redis, redis_prefix: str) -> None:
    key = stream_key(redis_prefix, "p:trim")
    for _ in range(5):
        await publish_fields(redis, [(key, {"data": "x" * 10})] * 1000, maxlen=1000)
    length = await redis.xlen(key)
    assert 1000 <= length < 5000  # '~': whole macro-nodes only, but trimmed
