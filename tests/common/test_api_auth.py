"""Bearer-token auth, problem-details errors and the protected OpenAPI document of every service."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel, SecretStr
from qcdr_common.api import (
    ApiAuthSettings,
    ApiError,
    ApiTokenConfigError,
    Principal,
    ReadPrincipal,
    Scope,
    TokenStore,
    WritePrincipal,
    require_scope,
)
from qcdr_common.db import make_engine
from qcdr_common.service_app import PUBLIC_PATHS, create_service_app
from qcdr_common.settings import CommonSettings
from qcdr_common.testing.logs import capture_logs
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.datastructures import Headers

ADMIN = "adm-0123456789abcdef-ADMIN"
READER = "rdr-0123456789abcdef-READ"
WRITER = "wrt-0123456789abcdef-WRITE"
SERVICES = ["ingest", "analysis", "response", "admission", "federation"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_tokens(path: Path, body: object) -> Path:
    path.write_text(json.dumps(body) if path.suffix == ".json" else _yaml(body))
    return path


def _yaml(body: object) -> str:
    import yaml

    return yaml.safe_dump(body)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def auth_headers(value: str | None) -> Headers:
    # Raw bytes, as a server hands them over (non-ASCII included).
    return Headers(raw=[] if value is None else [(b"authorization", value.encode())])


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_tokens_file_plain_and_hashed(tmp_path: Path, suffix: str) -> None:
    path = write_tokens(
        tmp_path / f"tokens{suffix}",
        {
            "tokens": [
                {"name": "soar", "sha256": sha(ADMIN), "scopes": ["read", "write"]},
                {"name": "dashboard", "token": READER, "scopes": ["read"]},
            ]
        },
    )
    store = TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path))
    assert store.names == ["soar", "dashboard"]
    assert store.authenticate(auth_headers(f"Bearer {ADMIN}")) == Principal(
        "soar", frozenset({Scope.READ, Scope.WRITE})
    )
    assert store.authenticate(auth_headers(f"bearer {READER}")).scopes == {Scope.READ}


def test_tokens_file_may_be_a_bare_list(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "t.yaml", [{"name": "w", "token": WRITER, "scopes": ["write"]}])
    store = TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path))
    assert store.authenticate(auth_headers(f"Bearer {WRITER}")) == Principal("w", frozenset({Scope.WRITE}))


def test_env_tokens_and_empty_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCDR_API_TOKEN", ADMIN)
    monkeypatch.setenv("QCDR_API_TOKEN_READ", "")
    monkeypatch.setenv("QCDR_API_TOKENS_FILE", "")
    store = TokenStore.from_settings(ApiAuthSettings())
    assert store.names == ["qcdr-api-token"]
    assert store.authenticate(auth_headers(f"Bearer {ADMIN}")).scopes == {Scope.READ, Scope.WRITE}
    monkeypatch.setenv("QCDR_API_TOKEN_READ", READER)
    store = TokenStore.from_settings(ApiAuthSettings())
    assert store.authenticate(auth_headers(f"Bearer {READER}")) == Principal(
        "qcdr-api-token-read", frozenset({Scope.READ})
    )


SECRET_IN_BAD_FILE = "s3cr3t-value-that-must-not-leak"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a", "token": SECRET_IN_BAD_FILE, "scopes": ["admin"]}], "scopes"),
        ([{"name": "a", "token": SECRET_IN_BAD_FILE, "sha256": sha("x"), "scopes": ["read"]}], "exactly one"),
        ([{"name": "a", "scopes": ["read"]}], "exactly one"),
        ([{"name": "a", "token": "short-" + SECRET_IN_BAD_FILE[:4], "scopes": ["read"]}], "at least 16"),
        ([{"name": "a", "token": SECRET_IN_BAD_FILE + " x", "scopes": ["read"]}], "may only contain"),
        ([{"name": "a", "sha256": "abc", "scopes": ["read"]}], "64 hexadecimal"),
        ([{"name": "a", "token": SECRET_IN_BAD_FILE, "scopes": []}], "scopes"),
        ([{"name": "a", "token": SECRET_IN_BAD_FILE, "scopes": ["read"], "extra": 1}], "extra"),
        ([{"name": "bad name", "token": SECRET_IN_BAD_FILE, "scopes": ["read"]}], "name"),
        (
            [
                {"name": "a", "token": SECRET_IN_BAD_FILE, "scopes": ["read"]},
                {"name": "a", "token": SECRET_IN_BAD_FILE + "2", "scopes": ["read"]},
            ],
            "unique",
        ),
        (
            [
                {"name": "a", "token": SECRET_IN_BAD_FILE, "scopes": ["read"]},
                {"name": "b", "sha256": sha(SECRET_IN_BAD_FILE), "scopes": ["write"]},
            ],
            "same token",
        ),
    ],
)
def test_bad_tokens_file_fails_loudly_without_quoting_secrets(
    tmp_path: Path, entries: list[dict[str, Any]], message: str
) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {"tokens": entries})
    with pytest.raises(ApiTokenConfigError, match=message) as info:
        TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path))
    assert SECRET_IN_BAD_FILE not in str(info.value)
    assert SECRET_IN_BAD_FILE[:10] not in str(info.value)


def test_unreadable_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ApiTokenConfigError, match="cannot read"):
        TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"tokens: [{{name: a, token: {SECRET_IN_BAD_FILE}\n")
    with pytest.raises(ApiTokenConfigError, match="not valid YAML") as info:
        TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=broken))
    assert SECRET_IN_BAD_FILE not in str(info.value)


def test_a_tokens_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "tokens.yaml"
    binary.write_bytes(b"\x00\xff\xfe tokens")
    with pytest.raises(ApiTokenConfigError, match=f"the API tokens file {binary}: not UTF-8 text"):
        TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=binary))


def test_short_env_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCDR_API_TOKEN", "tooshort")
    with pytest.raises(ApiTokenConfigError, match="QCDR_API_TOKEN: a token needs at least 16") as info:
        TokenStore.from_settings(ApiAuthSettings())
    assert "tooshort" not in str(info.value)


# --------------------------------------------------------------------------- authenticate


@pytest.fixture
def store() -> TokenStore:
    return TokenStore.from_settings(
        ApiAuthSettings(QCDR_API_TOKEN=SecretStr(ADMIN), QCDR_API_TOKEN_READ=SecretStr(READER))
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_token"),
        ("Basic dXNlcjpwYXNz", "malformed_token"),
        ("Bearer", "malformed_token"),
        ("Bearer ", "malformed_token"),
        ("Bearer two words", "malformed_token"),
        ("Bearer tök€n-with-non-ascii-chars", "malformed_token"),
        ("Bearer " + "a" * 5000, "malformed_token"),
        ("Bearer " + "z" * 32, "unknown_token"),
        ("Bearer " + ADMIN + "x", "unknown_token"),
        ("Bearer " + ADMIN[:-1], "unknown_token"),
    ],
)
def test_refusals_say_why(store: TokenStore, header: str | None, reason: str) -> None:
    with pytest.raises(ApiError) as info:
        store.authenticate(auth_headers(header))
    assert info.value.status == 401
    assert info.value.reason == reason
    challenge = info.value.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="qcdr"')
    assert ('error="invalid_token"' in challenge) == (reason != "missing_token")


def test_two_authorization_headers_are_malformed(store: TokenStore) -> None:
    headers = Headers(raw=[(b"authorization", f"Bearer {ADMIN}".encode())] * 2)
    with pytest.raises(ApiError) as info:
        store.authenticate(headers)
    assert info.value.reason == "malformed_token"


def test_every_configured_digest_is_compared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the loop does not stop at the first match, and only digests are compared."""
    tokens = [
        {"name": f"t{i}", "token": f"token-number-{i:04d}-abcdef", "scopes": ["read"]} for i in range(7)
    ]
    path = write_tokens(tmp_path / "tokens.yaml", tokens)
    store = TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path))
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # the module auth.py calls
    assert store.authenticate(auth_headers("Bearer token-number-0000-abcdef")).name == "t0"
    assert calls == [(32, 32)] * 7
    calls.clear()
    with pytest.raises(ApiError):
        store.authenticate(auth_headers("Bearer token-number-9999-abcdef"))
    assert len(calls) == 7


def test_tokens_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", [{"name": "old", "token": ADMIN, "scopes": ["read"]}])
    store = TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path), reload_interval_s=0.0)
    assert store.authenticate(auth_headers(f"Bearer {ADMIN}")).name == "old"

    write_tokens(path, [{"name": "new", "token": WRITER, "scopes": ["write"]}])
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    assert store.authenticate(auth_headers(f"Bearer {WRITER}")).name == "new"
    with pytest.raises(ApiError, match="not valid"):
        store.authenticate(auth_headers(f"Bearer {ADMIN}"))

    path.write_text("tokens: [ {broken")  # a bad update keeps the tokens in force
    os.utime(path, ns=(2, 2))
    with capture_logs() as logs:
        assert store.authenticate(auth_headers(f"Bearer {WRITER}")).name == "new"
    assert any(e["event"] == "api_tokens_reload_failed" for e in logs)

    path.write_bytes(b"\xff\xfe not text")  # nor does an update that is not UTF-8 (was a 500)
    os.utime(path, ns=(3, 3))
    with capture_logs() as logs:
        assert store.authenticate(auth_headers(f"Bearer {WRITER}")).name == "new"
    assert any(e["event"] == "api_tokens_reload_failed" for e in logs)


# --------------------------------------------------------------------------- the service app


class Thing(BaseModel):
    name: str


def make_app(**auth: Any) -> FastAPI:
    settings = ApiAuthSettings(QCDR_API_TOKEN=SecretStr(ADMIN), QCDR_API_TOKEN_READ=SecretStr(READER), **auth)
    app = create_service_app(CommonSettings(), title="test", auth=settings)

    # Added after create_service_app, as services do: protected all the same.
    @app.get("/v1/things")
    async def list_things() -> list[Thing]:
        return [Thing(name="a")]

    @app.post("/v1/things")
    async def create_thing(thing: Thing, who: WritePrincipal) -> dict[str, str]:
        return {"created": thing.name, "by": who.name}

    @app.get("/v1/whoami")
    async def whoami(who: ReadPrincipal) -> dict[str, str]:
        return {"name": who.name}

    @app.get("/v1/secret-report", dependencies=[Depends(require_scope("write"))])
    async def secret_report() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/conflict")
    async def conflict() -> None:
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    @app.get("/v1/gone")
    async def gone() -> None:
        raise HTTPException(404, "no such thing")

    @app.get("/v1/bug")
    async def bug() -> None:
        raise RuntimeError("a bug with internal details")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def assert_problem(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["reason"] == reason
    assert body["title"]
    assert body["detail"]
    return body


async def test_public_paths_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    # /readyz is public too; without the lifespan it has no checks and answers ok.
    assert (await client.get("/readyz")).status_code == 200
    assert set(PUBLIC_PATHS) == {"/healthz", "/readyz", "/metrics"}


async def test_protected_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/things")
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == 'Bearer realm="qcdr"'
    assert_problem(await client.get("/v1/things", headers=bearer("x" * 20)), 401, "unknown_token")
    assert (await client.get("/v1/things", headers=bearer(READER))).json() == [{"name": "a"}]
    assert (await client.get("/v1/whoami", headers=bearer(READER))).json() == {"name": "qcdr-api-token-read"}

    body = assert_problem(
        await client.post("/v1/things", json={"name": "b"}, headers=bearer(READER)), 403, "insufficient_scope"
    )
    assert body["required_scope"] == "write"
    created = await client.post("/v1/things", json={"name": "b"}, headers=bearer(ADMIN))
    assert created.json() == {"created": "b", "by": "qcdr-api-token"}

    # A GET that declares require_scope("write") needs write, not just read.
    assert_problem(await client.get("/v1/secret-report", headers=bearer(READER)), 403, "insufficient_scope")
    assert (await client.get("/v1/secret-report", headers=bearer(ADMIN))).json() == {"ok": "yes"}


async def test_auth_comes_before_body_parsing_and_routing(client: httpx.AsyncClient) -> None:
    """Without a token: 401 whatever the request, never a 422 or 404 revealing the API."""
    bad_json = await client.post(
        "/v1/things", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(bad_json, 401, "missing_token")
    assert_problem(await client.get("/v1/no-such-route"), 401, "missing_token")
    assert_problem(await client.get("/v1/no-such-route", headers=bearer(READER)), 404, "not_found")
    assert_problem(await client.delete("/v1/things", headers=bearer(ADMIN)), 405, "method_not_allowed")


async def test_errors_are_problems_and_nothing_user_caused_is_a_500(client: httpx.AsyncClient) -> None:
    body = assert_problem(
        await client.post("/v1/things", json={"nom": 1}, headers=bearer(ADMIN)), 422, "validation_error"
    )
    assert body["errors"] == [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]
    assert body["detail"] == "body.name: Field required"
    bad_json = await client.post(
        "/v1/things", content=b"{not json", headers={**bearer(ADMIN), "content-type": "application/json"}
    )
    assert assert_problem(bad_json, 422, "validation_error")["detail"] == (
        "the request body is not valid JSON (at character 1)"
    )
    assert_problem(await client.get("/v1/conflict", headers=bearer(READER)), 409, "conflict")
    gone = assert_problem(await client.get("/v1/gone", headers=bearer(READER)), 404, "not_found")
    assert gone["detail"] == "no such thing"
    bug = assert_problem(await client.get("/v1/bug", headers=bearer(READER)), 500, "internal_error")
    assert "internal details" not in json.dumps(bug)


@pytest.mark.db
async def test_values_postgres_refuses_are_422(database_url: str) -> None:
    app = make_app()
    engine = create_async_engine(database_url)

    @app.get("/v1/echo")
    async def echo(q: str) -> dict[str, str]:
        async with engine.connect() as conn:
            value = (await conn.execute(text("SELECT CAST(:q AS text)"), {"q": q})).scalar_one()
        return {"q": value}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/v1/echo", params={"q": "ok"}, headers=bearer(READER))).json() == {"q": "ok"}
            nul = await c.get("/v1/echo", params={"q": "a\x00b"}, headers=bearer(READER))
            assert_problem(nul, 422, "invalid_value")
    finally:
        await engine.dispose()


@pytest.mark.db
@pytest.mark.parametrize(
    "body",
    [
        b'{"n": 18446744073709551616}',  # 2**64: orjson encodes no integer past 64 bits
        b'{"s": "a\\ud800b"}',  # a lone surrogate, as JSON may escape one
    ],
    ids=["int-past-64-bits", "lone-surrogate"],
)
async def test_values_that_cannot_be_encoded_for_the_database_are_422(database_url: str, body: bytes) -> None:
    """A value JSON carries but a statement cannot be encoded from fails before the database
    (SQLAlchemy's StatementError, not a DBAPIError): still the caller's bad input, not a 500."""
    app = make_app()
    engine = make_engine(database_url)  # the services' engine: orjson for JSON columns

    @app.post("/v1/store")
    async def store(value: dict[str, Any]) -> dict[str, str]:
        statement = text("SELECT CAST(:v AS jsonb)").bindparams(bindparam("v", type_=JSONB))
        async with engine.connect() as conn:
            await conn.execute(statement, {"v": value})
        return {"stored": "yes"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {**bearer(ADMIN), "content-type": "application/json"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ok = await c.post("/v1/store", content=b'{"n": 1, "s": "ok"}', headers=headers)
            assert ok.json() == {"stored": "yes"}
            refused = assert_problem(
                await c.post("/v1/store", content=body, headers=headers), 422, "invalid_value"
            )
            assert refused["detail"] == "a value in the request was not acceptable"
    finally:
        await engine.dispose()


async def test_openapi_needs_a_read_token_and_documents_security(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/openapi.json"), 401, "missing_token")
    for path in ("/docs", "/redoc"):
        assert (await client.get(path, headers=bearer(READER))).status_code == 404
    doc = (await client.get("/openapi.json", headers=bearer(READER))).json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: Authorization: Bearer <token>. Scopes: read, write.",
    }
    paths = doc["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/v1/things"]["get"]["security"] == [{"bearerAuth": ["read"]}]
    assert paths["/v1/things"]["post"]["security"] == [{"bearerAuth": ["write"]}]
    assert paths["/v1/secret-report"]["get"]["security"] == [{"bearerAuth": ["read", "write"]}]
    post = paths["/v1/things"]["post"]["responses"]
    assert set(post) >= {"200", "401", "403", "422"}
    assert post["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "Problem" in doc["components"]["schemas"]
    assert "/openapi.json" not in paths
    assert "/metrics" not in paths


async def test_tokens_never_reach_the_logs(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await client.get("/v1/things", headers=bearer(ADMIN + "-wrong"))
        await client.post("/v1/things", json={"name": "x"}, headers=bearer(READER))
        await client.get("/v1/bug", headers=bearer(READER))
    text_of_logs = repr(logs)
    assert {e["event"] for e in logs} >= {"api_auth_refused", "api_internal_error"}
    for token in (ADMIN, READER):
        assert token not in text_of_logs


async def test_without_any_token_configured_everything_protected_is_401() -> None:
    app = create_service_app(CommonSettings(), title="t", auth=ApiAuthSettings())

    @app.get("/v1/x")
    async def x() -> dict[str, str]:
        return {}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert_problem(await c.get("/v1/x", headers=bearer("q" * 30)), 401, "unknown_token")
        assert (await c.get("/healthz")).status_code == 200


async def test_a_broken_tokens_file_stops_the_app_from_being_created(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: [{name: a, scopes: [read]}]")
    with pytest.raises(ApiTokenConfigError):
        create_service_app(CommonSettings(), title="t", auth=ApiAuthSettings(QCDR_API_TOKENS_FILE=path))


# --------------------------------------------------------------------------- every service


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _service_app(service: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[], FastAPI]:
    monkeypatch.setenv("QCDR_API_TOKEN", ADMIN)
    monkeypatch.setenv("QCDR_API_TOKEN_READ", READER)
    settings_mod = importlib.import_module(f"qcdr_{service}.settings")
    settings_mod.get_settings.cache_clear()
    factory: Callable[[], FastAPI] = importlib.import_module(f"qcdr_{service}.app").create_app
    return factory


@pytest.mark.parametrize("service", SERVICES)
async def test_every_protected_route_of_every_service_answers_401_without_a_token(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _service_app(service, monkeypatch)()
    public = {"/healthz", "/readyz", "/metrics"}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        checked = 0
        for route in app.routes:
            if not isinstance(route, APIRoute) or route.path in public:
                continue
            for method in sorted(route.methods or ()):
                response = await c.request(method, _concrete(route.path))
                assert response.status_code == 401, (method, route.path, response.text)
                checked += 1
        assert checked >= 1  # /openapi.json at least
        doc = await c.get("/openapi.json", headers=bearer(READER))
        assert doc.status_code == 200
        for path, item in doc.json()["paths"].items():
            for method, operation in item.items():
                if path in public:
                    assert operation["security"] == [], (method, path)
                else:
                    assert operation["security"][0]["bearerAuth"], (method, path)
    importlib.import_module(f"qcdr_{service}.settings").get_settings.cache_clear()
