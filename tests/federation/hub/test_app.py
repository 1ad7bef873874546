"""The app per role: which routes exist, what is public, scopes, ``/v1/federation``; and the
``/prefix/*`` public paths of the shared bearer middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from qcdr_common.api.auth import public_matcher
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_federation.app import create_app
from qcdr_federation.settings import FederationSettings

from tests.federation.conftest import (
    READ_HEADERS,
    WRITE_HEADERS,
    api_auth,
    client_for,
    make_settings,
    register_spoke,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]


def test_public_matcher_takes_exact_paths_and_prefixes() -> None:
    is_public = public_matcher(["/healthz", "/federation/v1/*"])
    assert is_public("/healthz")
    assert not is_public("/healthz/more")
    assert is_public("/federation/v1/register")
    assert is_public("/federation/v1/commands/cmd-1/result")
    assert not is_public("/federation/v1")  # the prefix itself is no route
    assert not is_public("/federation/v10/x")
    assert not is_public("/v1/clusters")
    assert not public_matcher([])("/anything")


@pytest.fixture
async def standalone(
    federation_db: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(federation_db, redis_url, redis_prefix, role=FederationRole.STANDALONE)
    app = create_app(settings, auth=api_auth())
    async with LifespanManager(app), client_for(app) as client:
        yield client


async def test_standalone_mounts_no_hub_routes(standalone: httpx.AsyncClient) -> None:
    info = await standalone.get("/v1/federation", headers=READ_HEADERS)
    assert info.status_code == 200
    assert info.json() == {"role": "standalone", "protocol_version": 1, "cluster_name": "default"}
    assert (await standalone.get("/v1/clusters", headers=READ_HEADERS)).status_code == 404
    assert (await standalone.get("/v1/baselines", headers=READ_HEADERS)).status_code == 404
    # /federation/v1 is not public here: the API-token check answers first
    response = await standalone.post("/federation/v1/register", json={})
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_token"
    assert (
        await standalone.post("/federation/v1/register", json={}, headers=WRITE_HEADERS)
    ).status_code == 404
    assert (await standalone.get("/healthz")).status_code == 200
    assert (await standalone.get("/metrics")).status_code == 200
    assert (await standalone.get("/v1/federation")).status_code == 401


async def test_hub_info_scopes_and_openapi(hub_client: httpx.AsyncClient) -> None:
    info = (await hub_client.get("/v1/federation", headers=READ_HEADERS)).json()
    assert info["role"] == "hub"
    assert info["cluster_name"] == "hub"
    assert info["heartbeat_interval_s"] == 10.0
    assert info["offline_after_s"] == 30.0
    assert "hub_url" not in info

    # a read token reads, never writes
    assert (await hub_client.get("/v1/clusters", headers=READ_HEADERS)).status_code == 200
    for method, path, body in [
        ("POST", "/v1/clusters", {"name": "eu-1"}),
        ("PATCH", "/v1/clusters/eu-1", {"labels": {}}),
        ("DELETE", "/v1/clusters/eu-1", None),
        ("POST", "/v1/clusters/eu-1/bootstrap-tokens", {}),
        ("POST", "/v1/clusters/eu-1/credentials/revoke", None),
        ("POST", "/v1/clusters/eu-1/credentials/rotate", None),
    ]:
        response = await hub_client.request(method, path, json=body, headers=READ_HEADERS)
        assert response.status_code == 403, (method, path)
        assert response.json()["reason"] == "insufficient_scope"
    assert (await hub_client.get("/v1/clusters")).status_code == 401

    document = (await hub_client.get("/openapi.json", headers=READ_HEADERS)).json()
    paths = document["paths"]
    assert paths["/federation/v1/register"]["post"]["security"] == []
    assert paths["/federation/v1/forward"]["post"]["security"] == []
    assert paths["/federation/v1/commands/{command_id}/result"]["post"]["security"] == []
    assert paths["/v1/clusters"]["post"]["security"] == [{"bearerAuth": ["write"]}]
    assert "requestBody" in paths["/federation/v1/forward"]["post"]


async def test_the_spoke_credential_is_no_api_token(hub_client: httpx.AsyncClient) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    response = await hub_client.get("/v1/clusters", headers=spoke.headers)
    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_token"


@pytest.fixture
async def spoke_app(federation_db: str, redis_url: str, redis_prefix: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        federation_db,
        redis_url,
        redis_prefix,
        role=FederationRole.SPOKE,
        hub_url="http://127.0.0.1:9",
        cluster_name="eu-1",
        consume_in_app=False,
    )
    app = create_app(settings, auth=api_auth())
    async with LifespanManager(app):
        yield app


async def test_spoke_role_info_and_no_hub_routes(spoke_app: FastAPI) -> None:
    async with client_for(spoke_app) as client:
        info = (await client.get("/v1/federation", headers=READ_HEADERS)).json()
        assert info["role"] == "spoke"
        assert info["cluster_name"] == "eu-1"
        assert info["hub_url"] == "http://127.0.0.1:9"
        assert (await client.get("/v1/clusters", headers=READ_HEADERS)).status_code == 404
        response = await client.post("/federation/v1/register", json={})
        assert response.status_code == 401
        assert response.json()["reason"] == "missing_token"


async def test_spoke_details_from_app_state(hub_settings: FederationSettings) -> None:
    # app.state.spoke_info may be a mapping, or a function (async or not) returning one
    settings = hub_settings.model_copy(update={"role": FederationRole.SPOKE, "hub_url": "http://hub:8000"})
    app = create_app(settings.model_copy(update={"role": FederationRole.STANDALONE}), auth=api_auth())

    async def details() -> dict[str, Any]:
        return {"registered": True}

    app.state.spoke_info = details
    app.state.settings = settings
    async with client_for(app) as client:
        info = (await client.get("/v1/federation", headers=READ_HEADERS)).json()
    assert info["role"] == "spoke"
    assert info["spoke"] == {"registered": True}


async def test_callers_are_not_mixed_up_when_the_server_shares_request_state(
    hub_settings: FederationSettings,
) -> None:
    """asgi-lifespan's wrapper hands every request the same ``scope["state"]`` dict: nothing about
    the caller may be kept there, or the second spoke would be taken for the first."""
    app = create_app(hub_settings, auth=api_auth())
    async with LifespanManager(app) as manager, client_for(manager.app) as client:
        eu = await register_spoke(client, "eu-1")
        us = await register_spoke(client, "us-1")
        baseline = {"profile_key": "sha256:" + "b" * 64, "source_cluster": "x", "generation": 1, "data": {}}
        response = await client.post(
            "/federation/v1/baselines", json={"baselines": [baseline]}, headers=eu.headers
        )
        assert response.json() == {"stored": 1}
        items = (await client.get("/federation/v1/baselines", headers=us.headers)).json()["items"]
        assert [b["source_cluster"] for b in items] == ["eu-1"]
        assert (await client.get("/federation/v1/baselines", headers=eu.headers)).json()["items"] == []
