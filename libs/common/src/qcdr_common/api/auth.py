"""Bearer-token authentication for every service's REST API.

Where tokens come from (any combination; all are read when the app is created):

- ``QCDR_API_TOKENS_FILE``: a YAML or JSON file (typically a mounted Kubernetes Secret) with a list
  of entries, bare or under ``tokens:``. Each entry has a ``name`` (shown in logs and audit
  records), either ``token`` (the secret itself) or ``sha256`` (hex digest of it, so the file holds
  nothing that grants access) and ``scopes`` (``read``, ``write``). The file is re-read when it
  changes (a Secret update rotates tokens without a restart); a broken new version keeps the old.
- ``QCDR_API_TOKEN``: one token with scopes read and write (simple setups, compose).
- ``QCDR_API_TOKEN_READ``: one token with scope read.

Scopes are independent: ``write`` does not imply ``read``. By default (the middleware) safe methods
(GET, HEAD, OPTIONS) need ``read`` and every other method needs ``write``; a route that needs more
declares ``Depends(require_scope(...))``, which also puts the scope into its OpenAPI entry.

Answers: 401 with ``WWW-Authenticate: Bearer`` and reason ``missing_token``, ``malformed_token`` or
``unknown_token``; 403 with reason ``insufficient_scope`` and the ``required_scope``. The bearer
token is hashed once and compared with every configured digest by ``hmac.compare_digest``, without
stopping at a match, so timing tells nothing about which token or how much of it matched. Tokens are
never logged, and configuration errors never quote them. With no token configured every protected
route answers 401 (fail closed) and start-up logs a warning.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from qcdr_common.api.errors import ApiError, api_error_response
from qcdr_common.config_files import ConfigFileError, load_yaml_file
from qcdr_common.logging import get_logger

log = get_logger("qcdr.api.auth")

SCHEME_NAME = "bearerAuth"
REALM = "qcdr"
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# RFC 6750 b64token: what may follow "Bearer ".
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"


class ApiTokenConfigError(ValueError):
    """The token configuration is unusable; the message names entries, never token values."""


@dataclass(frozen=True)
class Principal:
    """Who called: the token's ``name`` and its scopes (routes record ``name`` in audit trails)."""

    name: str
    scopes: frozenset[Scope]

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise forbidden(scope)


# --------------------------------------------------------------------------- configuration


class ApiAuthSettings(BaseSettings):
    """Where the API tokens come from (see the module docstring)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    tokens_file: Path | None = Field(default=None, validation_alias="QCDR_API_TOKENS_FILE")
    token: SecretStr | None = Field(default=None, validation_alias="QCDR_API_TOKEN")
    token_read: SecretStr | None = Field(default=None, validation_alias="QCDR_API_TOKEN_READ")

    @field_validator("tokens_file", "token", "token_read", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes ``QCDR_API_TOKEN: ${QCDR_API_TOKEN:-}``: an empty value means "not set".
        return None if value == "" else value


class TokenEntry(BaseModel):
    """One entry of the tokens file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    token: SecretStr | None = None
    sha256: str | None = None
    scopes: list[Scope] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must be 1-64 characters: letters, digits and _ . @ : - (not first)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'token' and 'sha256'")
        if self.token is not None:
            _check_token_value(self.token.get_secret_value())
        if self.sha256 is not None and not _SHA256_HEX.fullmatch(self.sha256):
            raise ValueError("'sha256' must be 64 hexadecimal characters")
        return self

    def digest(self) -> bytes:
        if self.token is not None:
            return _sha256(self.token.get_secret_value())
        assert self.sha256 is not None
        return bytes.fromhex(self.sha256)


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry]


def _check_token_value(value: str) -> None:
    # Raised messages must never contain the value itself.
    if len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token needs at least {MIN_TOKEN_LENGTH} characters (openssl rand -hex 32)")
    if len(value) > MAX_TOKEN_LENGTH or not _B64TOKEN.fullmatch(value):
        raise ValueError("a token may only contain letters, digits and - . _ ~ + / (then '=' padding)")


def _sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class _Entry:
    name: str
    digest: bytes
    scopes: frozenset[Scope]


def _entries_from_file(path: Path) -> list[_Entry]:
    try:
        raw: Any = load_yaml_file(path)
    except ConfigFileError as exc:
        # an ApiTokenConfigError whatever went wrong: a reload lets nothing else out of authenticate()
        raise ApiTokenConfigError(f"the API tokens file {exc}") from None
    if raw is None:
        raw = []
    try:
        parsed = TokenFile.model_validate({"tokens": raw} if isinstance(raw, list) else raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ApiTokenConfigError(f"the API tokens file {path} is invalid: {problems}") from None
    return [_Entry(e.name, e.digest(), frozenset(e.scopes)) for e in parsed.tokens]


def _entries_from_env(settings: ApiAuthSettings) -> list[_Entry]:
    entries: list[_Entry] = []
    for name, secret, scopes in (
        ("QCDR_API_TOKEN", settings.token, frozenset({Scope.READ, Scope.WRITE})),
        ("QCDR_API_TOKEN_READ", settings.token_read, frozenset({Scope.READ})),
    ):
        if secret is None:
            continue
        try:
            _check_token_value(secret.get_secret_value())
        except ValueError as exc:
            raise ApiTokenConfigError(f"{name}: {exc}") from None
        entries.append(_Entry(name.lower().replace("_", "-"), _sha256(secret.get_secret_value()), scopes))
    return entries


def _check_unique(entries: Sequence[_Entry]) -> None:
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ApiTokenConfigError(f"API token names must be unique; repeated: {', '.join(duplicates)}")
    seen: dict[bytes, str] = {}
    for entry in entries:
        if entry.digest in seen:
            raise ApiTokenConfigError(
                f"API tokens {seen[entry.digest]!r} and {entry.name!r} are the same token"
            )
        seen[entry.digest] = entry.name


# --------------------------------------------------------------------------- the store


def unauthorized(reason: str, detail: str) -> ApiError:
    # RFC 6750 section 3.1: no error code when the request carried no credentials at all.
    challenge = f'Bearer realm="{REALM}"'
    if reason != "missing_token":
        challenge += f', error="invalid_token", error_description="{detail}"'
    return ApiError(401, detail, reason=reason, headers={"WWW-Authenticate": challenge})


def forbidden(scope: Scope) -> ApiError:
    return ApiError(
        403,
        f"this token lacks the '{scope.value}' scope",
        reason="insufficient_scope",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'},
        extra={"required_scope": scope.value},
    )


class TokenStore:
    """The configured tokens; ``authenticate`` turns an ``Authorization`` header into a Principal."""

    def __init__(
        self,
        env_entries: Sequence[_Entry] = (),
        *,
        tokens_file: Path | None = None,
        reload_interval_s: float = 1.0,
    ) -> None:
        self._env_entries = list(env_entries)
        self._file = tokens_file
        self._reload_interval_s = reload_interval_s
        self._lock = threading.Lock()
        self._file_stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        file_entries: list[_Entry] = []
        if tokens_file is not None:
            self._file_stamp = self._stamp(tokens_file)
            file_entries = _entries_from_file(tokens_file)
        self._entries: tuple[_Entry, ...] = self._combine(file_entries)
        self._next_check = time.monotonic() + reload_interval_s

    @classmethod
    def from_settings(cls, settings: ApiAuthSettings, *, reload_interval_s: float = 1.0) -> TokenStore:
        return cls(
            _entries_from_env(settings), tokens_file=settings.tokens_file, reload_interval_s=reload_interval_s
        )

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def _combine(self, file_entries: Iterable[_Entry]) -> tuple[_Entry, ...]:
        entries = (*self._env_entries, *file_entries)
        _check_unique(entries)
        return entries

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int]:
        try:
            st = path.stat()  # follows the ..data symlink a Secret volume swaps on update
        except OSError as exc:
            raise ApiTokenConfigError(f"cannot read the API tokens file {path}: {exc.strerror}") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _maybe_reload(self) -> None:
        if self._file is None or time.monotonic() < self._next_check:
            return
        with self._lock:
            self._next_check = time.monotonic() + self._reload_interval_s
            try:
                stamp = self._stamp(self._file)
                if stamp == self._file_stamp:
                    return
                self._entries = self._combine(_entries_from_file(self._file))
                self._file_stamp = stamp
                log.info("api_tokens_reloaded", file=str(self._file), names=self.names)
            except ApiTokenConfigError as exc:
                log.error("api_tokens_reload_failed", problem=str(exc), kept=self.names)

    def authenticate(self, headers: Headers) -> Principal:
        """The caller behind the ``Authorization`` header, or an ApiError (401)."""
        values = headers.getlist("authorization")
        if not values:
            raise unauthorized("missing_token", "an Authorization: Bearer token is required")
        if len(values) > 1:
            raise unauthorized("malformed_token", "more than one Authorization header")
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            raise unauthorized("malformed_token", "the Authorization scheme must be Bearer")
        credentials = credentials.strip()
        if not credentials or len(credentials) > MAX_TOKEN_LENGTH or not _B64TOKEN.fullmatch(credentials):
            raise unauthorized("malformed_token", "the bearer token is empty or not a valid token")
        self._maybe_reload()
        digest = _sha256(credentials)
        found: _Entry | None = None
        for entry in self._entries:  # no early exit: every digest is compared
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            raise unauthorized("unknown_token", "the bearer token is not valid")
        return Principal(found.name, found.scopes)


# --------------------------------------------------------------------------- middleware


def public_matcher(public_paths: Collection[str]) -> Callable[[str], bool]:
    """Whether a request path is public: listed exactly, or under an entry ending in ``/*``
    (``"/federation/v1/*"``: every path below ``/federation/v1/``, for callers that authenticate
    with credentials of their own)."""
    exact = frozenset(p for p in public_paths if not p.endswith("/*"))
    prefixes = tuple(p[:-1] for p in public_paths if p.endswith("/*"))

    def is_public(path: str) -> bool:
        return path in exact or (bool(prefixes) and path.startswith(prefixes))

    return is_public


def scope_for_method(method: str) -> Scope:
    return Scope.READ if method.upper() in SAFE_METHODS else Scope.WRITE


class BearerAuthMiddleware:
    """Authenticates every HTTP request except those to ``public_paths`` (exact paths, or
    prefixes written ``/prefix/*``), before routing.

    Running ahead of routing means an unauthenticated caller gets 401 whatever it sends (no body
    parsing, no 422/404 that would reveal which routes exist) and every route, mounted apps and
    ``/openapi.json`` included, is protected unless it is listed as public.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: TokenStore,
        public_paths: Collection[str],
        read_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.store = store
        self.public_paths = frozenset(public_paths)
        self._is_public = public_matcher(self.public_paths)
        # POST routes that only answer a question (a verdict on a name): read scope is enough
        self.read_paths = frozenset(read_paths)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.store.authenticate(Headers(scope=scope))
            needed = Scope.READ if scope["path"] in self.read_paths else scope_for_method(scope["method"])
            principal.require(needed)
        except ApiError as exc:
            client = scope.get("client")
            log.info(
                "api_auth_refused",
                reason=exc.reason,
                path=scope["path"],
                method=scope["method"],
                client=client[0] if client else None,
            )
            await api_error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- dependencies


class _BearerScheme(HTTPBearer):
    """The OpenAPI ``bearerAuth`` scheme; as a dependency it returns the request's Principal."""

    def __init__(self) -> None:
        super().__init__(
            scheme_name=SCHEME_NAME,
            description="An API token: Authorization: Bearer <token>. Scopes: read, write.",
            auto_error=False,
        )

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = getattr(request.state, "principal", None)
        if isinstance(principal, Principal):
            return principal
        # No middleware in front (a router tested on its own): authenticate here.
        store = getattr(request.app.state, "api_tokens", None)
        if not isinstance(store, TokenStore):
            raise RuntimeError("no TokenStore on app.state.api_tokens: use create_service_app or protect()")
        principal = store.authenticate(request.headers)
        request.state.principal = principal
        return principal


bearer_scheme = _BearerScheme()


@cache
def require_scope(scope: Scope | str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's Principal, or 401/403. ``Depends(require_scope("write"))``."""
    needed = Scope(scope)

    # Security(..., scopes=...) puts the scope into the operation's OpenAPI security requirement.
    # A default rather than Annotated[...]: annotations are strings here (__future__) and one
    # mentioning the local ``needed`` could not be resolved by FastAPI.
    async def dependency(
        principal: Principal = Security(bearer_scheme, scopes=[needed.value]),  # noqa: B008
    ) -> Principal:
        principal.require(needed)
        return principal

    dependency.__name__ = f"require_{needed.value}_scope"
    return dependency


ReadPrincipal = Annotated[Principal, Depends(require_scope(Scope.READ))]
WritePrincipal = Annotated[Principal, Depends(require_scope(Scope.WRITE))]
