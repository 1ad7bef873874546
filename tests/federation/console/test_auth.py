"""Sign-in, sessions, CSRF, scopes and the security headers of the console."""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from qcdr_common.api.auth import Principal, Scope
from qcdr_federation.console import session as session_module
from qcdr_federation.console.session import SessionStore
from qcdr_federation.console.web import SECURITY_HEADERS
from redis.asyncio import Redis

from tests.federation.conftest import READ, WRITE
from tests.federation.console.conftest import BASE, csrf_of, post, sign_in


async def test_sign_in_sets_a_strict_session_cookie(client: httpx.AsyncClient, console_app: FastAPI) -> None:
    form = await client.get("/ui/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    response = await client.post("/ui/login", data={"token": WRITE})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    session_id = cookie.split(";", 1)[0].split("=", 1)[1]
    assert len(session_id) >= 43
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/ui"} <= flags
    # Redis holds the session under the digest of the id, and never the token
    redis = console_app.state.redis
    prefix = console_app.state.console.settings.redis_prefix
    raw = await redis.get(f"{prefix}:console:session:{hashlib.sha256(session_id.encode()).hexdigest()}")
    assert raw is not None
    assert WRITE not in raw.decode()
    assert b'"principal": "qcdr-api-token"' in raw
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert "qcdr-api-token" in page.text


@pytest.mark.parametrize(
    "token",
    [
        "not-a-valid-token-at-all",
        "tok\u00e9n-latin-1-but-not-ascii",
        # outside Latin-1: once a 500, the typed token was put in a header to check it
        "tok\u20acn-outside-latin-1",
        f"{WRITE}\u20ac",
    ],
    ids=["unknown", "latin-1", "euro-sign", "valid-token-and-euro-sign"],
)
async def test_a_bad_token_is_refused_and_sets_nothing(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/ui/login", data={"token": token})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert "That token is not valid." in response.text
    assert (await client.get("/ui/")).status_code == 303


async def test_sign_out_ends_the_session(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    old_cookie = client.cookies.get("qcdr_console")
    response = await post(client, "/ui/logout", csrf)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    # the old id is dead even if a browser kept it
    client.cookies.set("qcdr_console", old_cookie or "", domain="console.test", path="/ui")
    again = await client.get("/ui/")
    assert again.status_code == 303
    assert again.headers["location"] == "/ui/login"


async def test_pages_without_a_session_redirect_and_posts_are_refused(client: httpx.AsyncClient) -> None:
    for path in ("/ui/", "/ui/findings", "/ui/chains", "/ui/actions"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/ui/login"
    response = await client.post("/ui/logout", data={"csrf_token": "x"})
    assert response.status_code == 401
    client.cookies.set("qcdr_console", "forged", domain="console.test", path="/ui")
    assert (await client.get("/ui/")).status_code == 303


async def test_csrf_token_and_origin_are_checked(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client)
    missing = await client.post("/ui/logout", data={}, headers={"Origin": BASE})
    assert missing.status_code == 403
    wrong = await client.post("/ui/logout", data={"csrf_token": csrf[:-2] + "xx"}, headers={"Origin": BASE})
    assert wrong.status_code == 403
    other = await client.post(
        "/ui/logout", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert other.status_code == 403
    # still signed in after the refusals; no Origin header (older browsers) is accepted
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert (await client.post("/ui/logout", data={"csrf_token": csrf})).status_code == 303


async def test_security_headers_on_pages_redirects_and_errors(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/ui/login"),
        await client.get("/ui/"),
        await client.post("/ui/login", data={"token": "x"}),
    ):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]
    css = await client.get("/ui/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


async def test_the_api_still_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    # the session cookie is scoped to /ui and opens nothing else
    assert (await client.get("/v1/federation")).status_code == 401


async def test_read_only_principal_sees_who_it_is(client: httpx.AsyncClient) -> None:
    csrf = await sign_in(client, READ)
    page = await client.get("/ui/")
    assert "(read-only)" in page.text
    assert csrf_of(page.text) == csrf


async def test_sign_in_from_another_origin_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ui/login", data={"token": WRITE}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_signing_in_again_replaces_the_session(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    first = client.cookies.get("qcdr_console")
    await sign_in(client, READ)
    assert client.cookies.get("qcdr_console") != first
    client.cookies.set("qcdr_console", first or "", domain="console.test", path="/ui")
    assert (await client.get("/ui/")).status_code == 303


async def test_sessions_expire_when_idle_and_at_the_limit(
    redis_client: Redis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store's clock is the test's: the idle time and the limit are checked against it, so a
    # busy machine cannot stretch "just used" past the idle time (Redis' own expiry, in real
    # time, is the backstop: its TTL is checked apart)
    clock = [time.time()]
    monkeypatch.setattr(session_module, "time", SimpleNamespace(time=lambda: clock[0]))
    principal = Principal("alice", frozenset({Scope.READ}))
    idle = SessionStore(redis_client, redis_prefix, idle_s=30, max_s=3600)
    session_id, _ = await idle.create(principal)
    assert 0 < await redis_client.pttl(idle._key(session_id)) <= 30_000  # Redis drops it then too
    clock[0] += 20
    assert await idle.load(session_id) is not None  # use restarts the idle timer
    assert await redis_client.pttl(idle._key(session_id)) > 20_000  # in Redis too
    clock[0] += 20  # 40 s after the start, 20 s after the use
    loaded = await idle.load(session_id)
    assert loaded is not None
    assert loaded.principal == "alice"
    assert not loaded.can_write
    clock[0] += 31
    assert await idle.load(session_id) is None
    assert await redis_client.exists(idle._key(session_id)) == 0
    capped = SessionStore(redis_client, redis_prefix, idle_s=30, max_s=50)
    session_id, _ = await capped.create(principal)
    for _ in range(2):
        clock[0] += 20
        assert await capped.load(session_id) is not None
    assert await redis_client.pttl(capped._key(session_id)) <= 10_000  # not past the limit in Redis
    clock[0] += 20  # used 20 s ago, but 60 s after the start
    assert await capped.load(session_id) is None
    assert await capped.load("x" * 500) is None


async def test_ui_root_and_oversized_forms(client: httpx.AsyncClient) -> None:
    root = await client.get("/ui")
    assert root.status_code == 307
    assert root.headers["location"] == "/ui/"
    too_big = await client.post(
        "/ui/login",
        content=b"token=" + b"a" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert too_big.status_code == 413
