"""Console fixtures: the federation app (standalone or hub) with its backends replaced by fakes, a
browser-like client over https (the session cookie is Secure) and sign-in helpers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_federation.app import create_app
from qcdr_federation.console.backends import Backends
from qcdr_federation.settings import FederationSettings

from tests.federation.conftest import READ, WRITE, api_auth, make_settings
from tests.federation.console.fakes import FakeData, transports

BASE = "https://console.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def fake() -> FakeData:
    return FakeData()


async def attach_fakes(app: FastAPI, settings: FederationSettings, data: FakeData) -> None:
    await app.state.console.backends.aclose()
    app.state.console.backends = Backends(settings, transports=transports(data))  # type: ignore[arg-type]


@pytest.fixture
async def console_app(
    federation_db: str, redis_url: str, redis_prefix: str, fake: FakeData
) -> AsyncIterator[FastAPI]:
    """A standalone federation app (the console needs no hub) with fake backends."""
    settings = make_settings(
        federation_db, redis_url, redis_prefix, role=FederationRole.STANDALONE, consume_in_app=False
    )
    app = create_app(settings, auth=api_auth())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        await attach_fakes(app, settings, fake)
        yield app


def browser(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("10.1.2.3", 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE, timeout=30)


@pytest.fixture
async def client(console_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(console_app) as c:
        yield c


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = WRITE) -> str:
    """Sign in; the CSRF token of the session."""
    response = await client.post("/ui/login", data={"token": token})
    assert response.status_code == 303, response.text
    page = await client.get("/ui/")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def post(client: httpx.AsyncClient, path: str, csrf: str, **fields: Any) -> httpx.Response:
    return await client.post(path, data={"csrf_token": csrf, **fields}, headers={"Origin": BASE})


__all__ = ["READ", "WRITE", "FakeData", "browser", "csrf_of", "post", "sign_in"]
