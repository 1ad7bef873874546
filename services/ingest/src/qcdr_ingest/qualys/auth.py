"""Gateway JWT: log in with a form POST to ``/auth``, keep the token, renew it before it expires.

The original kept one token for the life of the process and never retried a 401, so long-running
mode died when the JWT expired. Here the ``exp`` claim is read (without verifying the signature:
only the gateway can verify it, and we only want to know when it runs out) and the token is
renewed ``min(margin, fraction * lifetime)`` before then. A 401 on an API call gets exactly one
fresh login through :meth:`TokenProvider.renew`.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import jwt
from pydantic import SecretStr

from qcdr_ingest.qualys.errors import (
    QualysAuthError,
    QualysHTTPError,
    QualysPayloadError,
    transport_error,
)
from qcdr_ingest.qualys.retry import RetryNotice, RetryPolicy, send_with_retries

AUTH_PATH = "/auth"
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_NO_CREDENTIALS = "no Qualys credentials: set QUALYS_USERNAME and QUALYS_PASSWORD, or QUALYS_ACCESS_TOKEN"


@dataclass(frozen=True, slots=True)
class TokenTiming:
    margin_s: float = 300.0
    fraction: float = 0.1
    default_lifetime_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)  # the JWT: a repr in a log or a traceback must not show it
    renew_at: float  # on the provider's monotonic clock


def token_lifetime(token: str, *, now: float | None = None) -> float | None:
    """Seconds the JWT is valid for, from its ``exp`` (and ``iat`` when present); None if absent.

    ``exp - iat`` is used when both are there so that clock skew between us and the gateway does
    not shorten or stretch the lifetime.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError as exc:
        raise QualysPayloadError(f"the token is not a readable JWT ({exc})") from exc
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    iat = claims.get("iat")
    if isinstance(iat, int | float) and not isinstance(iat, bool) and iat <= exp:
        return float(exp - iat)
    return float(exp) - (time.time() if now is None else now)


def _describe_body(response: httpx.Response) -> str:
    text = response.text.strip()
    content_type = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    if not text:
        return "an empty body"
    if text.startswith("<"):
        return f"HTML ({content_type}) instead of a token"
    if text.startswith(("{", "[")):
        return f"JSON ({content_type}) instead of a token: {text[:120]!r}"
    return f"{content_type} that is not a JWT: {text[:40]!r}"


class TokenProvider:
    """Hands out a valid bearer token; logs in (again) when needed. Safe for concurrent callers."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        username: str | None,
        password: SecretStr | None,
        access_token: SecretStr | None = None,
        timing: TokenTiming | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        self._http = http
        self._username = username
        self._password = password
        static = access_token.get_secret_value().strip() if access_token is not None else ""
        self._static = static or None
        self._timing = timing or TokenTiming()
        self._retry = retry or RetryPolicy()
        self._rng = rng
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry
        self._lock = asyncio.Lock()
        self._token: _Token | None = None
        self.logins = 0
        self.auth_requests = 0

    @property
    def can_login(self) -> bool:
        return bool(self._username) and self._password is not None and bool(self._password.get_secret_value())

    async def get(self) -> str:
        """A token that is not due for renewal."""
        if self._token is None and self._static is not None:
            # Used as given: the gateway decides whether it is still valid (a 401 tells us).
            self._token = _Token(self._static, renew_at=float("inf"))
        current = self._token
        if current is not None and self._clock() < current.renew_at:
            return current.value
        async with self._lock:
            current = self._token
            if current is not None and self._clock() < current.renew_at:
                return current.value
            return await self._login()

    async def renew(self, rejected: str) -> str:
        """A different token after ``rejected`` got a 401; raises when no new one can be had."""
        async with self._lock:
            if self._token is not None and self._token.value != rejected:
                return self._token.value  # another caller already renewed it
            if not self.can_login:
                if self._static is not None:
                    raise QualysAuthError(
                        "QUALYS_ACCESS_TOKEN was rejected (HTTP 401): it may have expired, or be a "
                        "subscription token, which the CDR API does not accept"
                    )
                raise QualysAuthError(_NO_CREDENTIALS)
            return await self._login()

    async def _login(self) -> str:
        if not self.can_login:
            raise QualysAuthError(_NO_CREDENTIALS)
        assert self._password is not None
        url = self._http.base_url.join(AUTH_PATH.lstrip("/"))
        form = {
            "username": self._username or "",
            "password": self._password.get_secret_value(),
            "token": "true",
        }

        async def send() -> httpx.Response:
            self.auth_requests += 1
            return await self._http.post(url, data=form, headers={"Accept": "*/*"})

        try:
            response = await send_with_retries(
                send, self._retry, rng=self._rng, sleep=self._sleep, on_retry=self._on_retry
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc
        if response.status_code in (401, 403):
            raise QualysAuthError(
                f"Qualys rejected the credentials of user {self._username!r} at {url} "
                f"(HTTP {response.status_code}); check QUALYS_USERNAME/QUALYS_PASSWORD and the platform"
            )
        if response.status_code not in (200, 201):
            raise QualysHTTPError(
                f"Qualys login at {url} failed with HTTP {response.status_code}", response.status_code
            )
        token = response.text.strip()
        if not _JWT_SHAPE.match(token):
            raise QualysPayloadError(f"Qualys login at {url} returned {_describe_body(response)}")
        lifetime = token_lifetime(token)
        if lifetime is None:
            lifetime = self._timing.default_lifetime_s
        early = min(self._timing.margin_s, self._timing.fraction * max(lifetime, 0.0))
        self._token = _Token(token, renew_at=self._clock() + lifetime - early)
        self.logins += 1
        return token
