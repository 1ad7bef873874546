"""Who is calling ``/federation/v1``: the spoke behind a per-spoke credential.

A credential is ``<id>.<secret>`` (``id``: 16 hex characters; ``secret``: 32 random bytes,
base64url). The hub stores the SHA-256 of the whole string only: the row is found by ``id``, then
the digests are compared with :func:`hmac.compare_digest`. A credential stops working when it is
revoked (operator, or a newer registration), when its rotation overlap ends (``expires_at``), or
when its cluster is removed.

Every refusal is a 401 with ``WWW-Authenticate: Bearer realm="qcdr-federation"`` and a problem
``reason``; it is logged (``federation_auth_failed``: reason, credential id or cluster name,
client address, never a secret) and counted (``qcdr_federation_auth_failures_total{reason}``).

``last_used_at`` is written at most once a minute per credential, so an authenticated request
costs one indexed read and no write. A credential verified a moment ago costs not even that: each
hub replica remembers a verified credential (by its digest) for ``credential_cache_s`` (default 5 s),
because a spoke's long polls, heartbeats and reports arrive several per second across a fleet and
the database round trip was most of what a hub did per request. Revoking credentials or removing a
cluster clears this replica's memory at once; another replica notices within the cache time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from qcdr_common.api.errors import ApiError
from qcdr_common.logging import get_logger
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_federation.hub.clusters.models import ClusterRow, CredentialRow
from qcdr_federation.hub.metrics import AUTH_FAILURES

log = get_logger("qcdr.federation.auth")

REALM = "qcdr-federation"
LAST_USED_EVERY = timedelta(minutes=1)
MAX_CREDENTIAL_LENGTH = 512
_CREDENTIAL = re.compile(r"(?P<id>[0-9a-f]{16})\.(?P<secret>[A-Za-z0-9_-]{16,256})")


@dataclass(frozen=True)
class SpokeCaller:
    cluster_id: str
    cluster_name: str
    labels: Mapping[str, str]
    credential_id: str


class VerifiedCredentials:
    """Credentials this replica verified recently (digest -> caller), for ``ttl_s`` seconds each."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[SpokeCaller, float, datetime | None]] = {}

    def get(self, digest: bytes, now: datetime) -> SpokeCaller | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        caller, until, expires_at = entry
        if time.monotonic() >= until or (expires_at is not None and expires_at <= now):
            del self._entries[digest]
            return None
        return caller

    def put(self, digest: bytes, caller: SpokeCaller, expires_at: datetime | None) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (caller, time.monotonic() + self.ttl_s, expires_at)

    def clear(self) -> None:
        self._entries.clear()


def forget_verified(state: object) -> None:
    """After revoking credentials or removing a cluster: this replica checks every credential again."""
    cache = getattr(state, "verified_credentials", None)
    if isinstance(cache, VerifiedCredentials):
        cache.clear()


def sha256(value: str) -> bytes:
    # "surrogatepass": a token JSON smuggled a lone surrogate into matches no stored hash (a 401
    # like any wrong token) instead of failing to encode
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def new_secret_pair() -> tuple[str, str]:
    """A fresh ``(id, "<id>.<secret>")`` (credentials and API-made bootstrap tokens)."""
    ident = secrets.token_hex(8)
    return ident, f"{ident}.{secrets.token_urlsafe(32)}"


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def auth_failure(
    reason: str,
    detail: str,
    *,
    client: str | None,
    credential_id: str | None = None,
    cluster_name: str | None = None,
    why: str | None = None,
) -> ApiError:
    """Log and count a refusal, and the 401 to raise for it."""
    AUTH_FAILURES.labels(reason=reason).inc()
    log.warning(
        "federation_auth_failed",
        reason=reason,
        why=why,
        credential_id=credential_id,
        cluster_name=cluster_name,
        client=client,
    )
    challenge = f'Bearer realm="{REALM}"'
    if reason != "missing_credential":
        challenge += ', error="invalid_token"'
    return ApiError(401, detail, reason=reason, headers={"WWW-Authenticate": challenge})


def _bearer(request: Request, client: str | None) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        raise auth_failure(
            "missing_credential", "an Authorization: Bearer <spoke credential> is required", client=client
        )
    if len(values) > 1:
        raise auth_failure("malformed_credential", "more than one Authorization header", client=client)
    scheme, _, value = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise auth_failure("malformed_credential", "the Authorization scheme must be Bearer", client=client)
    return value.strip()


async def authenticate(
    sessions: async_sessionmaker[AsyncSession],
    credential: str,
    *,
    client: str | None,
    now: datetime,
    verified: VerifiedCredentials | None = None,
) -> SpokeCaller:
    """The spoke owning ``credential``, or an ApiError (401) already logged and counted."""
    match = _CREDENTIAL.fullmatch(credential) if len(credential) <= MAX_CREDENTIAL_LENGTH else None
    if match is None:
        raise auth_failure(
            "malformed_credential", "the credential is not of the form <id>.<secret>", client=client
        )
    digest = sha256(credential)
    if verified is not None and (known := verified.get(digest, now)) is not None:
        return known
    ident = match["id"]
    async with sessions() as session:
        row = (
            await session.execute(
                select(CredentialRow, ClusterRow)
                .join(ClusterRow, ClusterRow.id == CredentialRow.cluster_id)
                .where(CredentialRow.id == ident)
            )
        ).one_or_none()
        if row is None or not hmac.compare_digest(row[0].sha256, digest):
            # one answer for "no such id" and "wrong secret": the id alone proves nothing
            raise auth_failure(
                "unknown_credential", "the credential is not valid", client=client, credential_id=ident
            )
        cred, cluster = row[0], row[1]
        if cluster.removed_at is not None:
            raise auth_failure(
                "cluster_removed",
                "the cluster was removed from the hub",
                client=client,
                credential_id=ident,
                cluster_name=cluster.name,
            )
        if cred.revoked_at is not None:
            raise auth_failure(
                "revoked_credential",
                "the credential was revoked; register again with a new bootstrap token",
                client=client,
                credential_id=ident,
                cluster_name=cluster.name,
            )
        if cred.expires_at is not None and cred.expires_at <= now:
            raise auth_failure(
                "expired_credential",
                "the credential was rotated and its overlap has ended",
                client=client,
                credential_id=ident,
                cluster_name=cluster.name,
            )
        if cred.last_used_at is None or now - cred.last_used_at >= LAST_USED_EVERY:
            await session.execute(
                update(CredentialRow).where(CredentialRow.id == ident).values(last_used_at=now)
            )
            await session.commit()
        caller = SpokeCaller(
            cluster_id=cluster.id,
            cluster_name=cluster.name,
            labels=dict(cluster.labels),
            credential_id=ident,
        )
        if verified is not None:
            verified.put(digest, caller, cred.expires_at)
        return caller


async def spoke_caller(request: Request) -> SpokeCaller:
    """FastAPI dependency: the authenticated spoke, or 401. (FastAPI resolves it once per request;
    nothing is kept on ``request.state``, which some servers share between requests.)"""
    client = client_address(request)
    credential = _bearer(request, client)
    state = request.app.state
    verified = getattr(state, "verified_credentials", None)
    if verified is None:
        ttl = float(getattr(getattr(state, "settings", None), "credential_cache_s", 0.0))
        verified = state.verified_credentials = VerifiedCredentials(ttl)
    return await authenticate(
        state.sessions, credential, client=client, now=datetime.now(UTC), verified=verified
    )


SpokeAuth = Annotated[SpokeCaller, Depends(spoke_caller)]
