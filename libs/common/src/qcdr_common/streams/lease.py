"""A lease on one Redis key, for work that only one replica may do at a time.

The holder's id is the key's value and the lease lasts ``ttl_s`` unless renewed. Renewing and
releasing compare the value first (one Lua script each, atomic in Redis), so a replica whose lease
expired and was taken can neither extend nor delete its successor's. This is Kubernetes' leader
election with Redis as the lock: like controller-runtime, a holder that cannot renew within the
lease stops its work rather than risk two leaders.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    def __init__(self, redis: Redis, key: str, holder: str, ttl_s: float) -> None:
        self.redis = redis
        self.key = key
        # a random suffix: two processes given the same name (a copied environment) stay apart
        self.holder = f"{holder}:{secrets.token_hex(4)}"
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or renew it if this holder does)."""
        if await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms):
            return True
        return await self.renew()

    async def renew(self) -> bool:
        """Extend the lease; False when this holder no longer has it."""
        return bool(await self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    async def release(self) -> None:
        """Give the lease back (a no-op when it was lost), so a standby need not wait it out."""
        await self._release(keys=[self.key], args=[self.holder])
