"""Pipelined XADD: many entries, one round trip, approximate MAXLEN trimming."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from qcdr_common.streams.envelope import Envelope

# Fields as redis-py accepts them for XADD.
Fields = Mapping[Any, Any]


async def publish_fields(redis: Redis, entries: Sequence[tuple[str, Fields]], maxlen: int) -> list[str]:
    """XADD each ``(stream key, fields)`` in order, pipelined; returns the entry ids.

    ``MAXLEN ~`` lets Redis trim whole macro-nodes only, which is cheap; it trims entries whether
    or not a group has read them, hence ``maxlen`` must sit far above any backlog.
    """
    if not entries:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key, fields in entries:
            pipe.xadd(key, dict(fields), maxlen=maxlen, approximate=True)
        ids = await pipe.execute()
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


async def publish(redis: Redis, stream_key: str, envelopes: Sequence[Envelope], maxlen: int) -> list[str]:
    """Publish envelopes straight to a stream (not through an outbox): for relays, replays, tests.

    Cross-service publications that go with a state change belong in the outbox instead.
    """
    return await publish_fields(redis, [(stream_key, e.to_fields()) for e in envelopes], maxlen)
