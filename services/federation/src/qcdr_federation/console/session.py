"""Console sessions, kept in Redis.

Sign-in exchanges an API token for a random session id (32 bytes); the cookie carries the id and
Redis holds ``<prefix>:console:session:<sha256 hex of id>`` → JSON ``{principal, scopes, csrf,
created, seen}``. Only the digest is a key, so reading Redis does not yield usable cookies, and the
API token itself is never stored. A session ends when unused for the idle time or, however busy,
at the absolute limit: the key's TTL is the smaller of the two remainders, renewed on every use.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from qcdr_common.api.auth import Principal, Scope
from redis.asyncio import Redis

COOKIE_NAME = "qcdr_console"
COOKIE_PATH = "/ui"
# the longest cookie value we look up: a 32-byte id is 43 url-safe characters
_MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class ConsoleSession:
    principal: str
    scopes: frozenset[Scope]
    csrf: str
    created: float
    seen: float

    @property
    def can_write(self) -> bool:
        return Scope.WRITE in self.scopes

    @property
    def can_read(self) -> bool:
        return Scope.READ in self.scopes

    def to_json(self) -> str:
        return json.dumps(
            {
                "principal": self.principal,
                "scopes": sorted(s.value for s in self.scopes),
                "csrf": self.csrf,
                "created": self.created,
                "seen": self.seen,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ConsoleSession | None:
        try:
            data: Any = json.loads(raw)
            return cls(
                principal=str(data["principal"]),
                scopes=frozenset(Scope(s) for s in data["scopes"]),
                csrf=str(data["csrf"]),
                created=float(data["created"]),
                seen=float(data["seen"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


class SessionStore:
    def __init__(self, redis: Redis, prefix: str, *, idle_s: float, max_s: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.idle_s = idle_s
        self.max_s = max_s

    def _key(self, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return f"{self._prefix}:console:session:{digest}"

    def _ttl_ms(self, session: ConsoleSession, now: float) -> int:
        remaining = min(self.idle_s, session.created + self.max_s - now)
        return max(1, int(remaining * 1000))

    async def create(self, principal: Principal) -> tuple[str, ConsoleSession]:
        """A new session for ``principal``: (the id for the cookie, the session)."""
        now = time.time()
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(
            principal=principal.name,
            scopes=principal.scopes,
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
        )
        await self._redis.set(self._key(session_id), session.to_json(), px=self._ttl_ms(session, now))
        return session_id, session

    async def load(self, session_id: str | None) -> ConsoleSession | None:
        """The live session behind a cookie value (its idle timer restarted), else None."""
        if not session_id or len(session_id) > _MAX_ID_LENGTH:
            return None
        key = self._key(session_id)
        raw = await self._redis.get(key)
        if raw is None:
            return None
        session = ConsoleSession.from_json(raw)
        now = time.time()
        if session is None or now - session.seen > self.idle_s or now - session.created > self.max_s:
            await self._redis.delete(key)
            return None
        session = ConsoleSession(session.principal, session.scopes, session.csrf, session.created, now)
        await self._redis.set(key, session.to_json(), px=self._ttl_ms(session, now), xx=True)
        return session

    async def delete(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= _MAX_ID_LENGTH:
            await self._redis.delete(self._key(session_id))
