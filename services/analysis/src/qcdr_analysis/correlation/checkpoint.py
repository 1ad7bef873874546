"""The correlation engine's state in Redis: four hashes and one value per analysis deployment.

``{prefix}:analysis:correlation:partials|buffer|seen|addresses`` hold the engine's entries (HSET what a batch
changed, HDEL what it removed), ``…:meta`` the small rest, ``…:pending`` the chains emitted but
not yet known to be committed. One MULTI per batch, so Redis never holds half a checkpoint.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

HASHES = ("partials", "buffer", "seen", "addresses")


class RedisCheckpoint:
    def __init__(self, redis: Redis, prefix: str, name: str = "analysis:correlation") -> None:
        self.redis = redis
        base = f"{prefix}:{name}" if prefix else name
        self.keys = {part: f"{base}:{part}" for part in (*HASHES, "meta", "pending")}

    async def save(self, delta: dict[str, Any], pending: dict[str, bytes | None]) -> None:
        """Apply a checkpoint delta (``None`` values delete) and the pending chains, atomically."""
        pipe = self.redis.pipeline(transaction=True)
        for part in HASHES:
            entries: dict[str, Any] = delta.get(part) or {}
            present = {k: orjson.dumps(v) for k, v in entries.items() if v is not None}
            gone = [k for k, v in entries.items() if v is None]
            if present:
                pipe.hset(self.keys[part], mapping=present)  # type: ignore[arg-type]
            if gone:
                pipe.hdel(self.keys[part], *gone)
        meta = {k: v for k, v in delta.items() if k not in HASHES}
        pipe.set(self.keys["meta"], orjson.dumps(meta))
        add = {k: v for k, v in pending.items() if v is not None}
        drop = [k for k, v in pending.items() if v is None]
        if add:
            pipe.hset(self.keys["pending"], mapping=add)  # type: ignore[arg-type]
        if drop:
            pipe.hdel(self.keys["pending"], *drop)
        await pipe.execute()

    async def confirm(self, chain_ids: list[str]) -> None:
        """These chains are committed: a restart need not emit them again."""
        if chain_ids:
            await self.redis.hdel(self.keys["pending"], *chain_ids)

    async def load(self) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
        """(the snapshot, pending chains as finding JSON by id); (None, {}) when nothing is stored."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.keys["meta"])
        for part in HASHES:
            pipe.hgetall(self.keys[part])
        pipe.hgetall(self.keys["pending"])
        meta_raw, *hashes, pending_raw = await pipe.execute()
        pending = {_text(k): bytes(v) for k, v in (pending_raw or {}).items()}
        if meta_raw is None:
            return None, pending
        snapshot: dict[str, Any] = orjson.loads(meta_raw)
        for part, raw in zip(HASHES, hashes, strict=True):
            snapshot[part] = {_text(k): orjson.loads(v) for k, v in (raw or {}).items()}
        return snapshot, pending

    async def clear(self) -> None:
        await self.redis.delete(*self.keys.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
