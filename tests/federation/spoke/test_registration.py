"""The credential's life on the spoke, against a small in-process hub (``httpx.MockTransport``):
register with the token file, resume after a restart, drop a refused credential and register again
with a new token, rotate when asked and when the credential gets old."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from qcdr_common.db import make_session_factory
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.client import HubClient, HubError, HubErrorKind
from qcdr_federation.spoke.registration import Registrar
from qcdr_federation.spoke.runtime import REGISTRATION, AgentState
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.federation.spoke.conftest import eventually, make_spoke_settings

pytestmark = [pytest.mark.db]


class FakeHub:
    """Bootstrap tokens are one-time; credentials work until revoked; rotation keeps the old one."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.valid: dict[str, str] = {}  # credential id -> whole credential
        self.calls: list[str] = []
        self.issued = 0

    def _issue(self) -> httpx.Response:
        self.issued += 1
        cid = f"cred{self.issued}"
        self.valid[cid] = f"{cid}.secret{self.issued}"
        body = {
            "cluster_id": "cluster-1",
            "cluster_name": "spoke-a",
            "credential_id": cid,
            "credential": self.valid[cid],
            "heartbeat_interval_s": 0.2,
        }
        return httpx.Response(201, json=body)

    def _refused(self, reason: str) -> httpx.Response:
        return httpx.Response(401, json={"status": 401, "reason": reason, "detail": reason})

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(path)
        if path == "/federation/v1/register":
            token = json.loads(request.content)["bootstrap_token"]
            if token not in self.tokens:
                return self._refused("invalid_bootstrap_token")
            self.tokens.discard(token)
            return self._issue()
        auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if auth not in self.valid.values():
            return self._refused("revoked_credential")
        if path == "/federation/v1/credentials/rotate":
            return self._issue()
        return httpx.Response(200, json={"items": []})

    def revoke_all(self) -> None:
        self.valid.clear()


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


def spoke_settings(db: str, redis_url: str, prefix: str, token_file: Path, **kw: Any) -> FederationSettings:
    return make_spoke_settings(
        db, redis_url, prefix, "http://hub.test", bootstrap_token_file=token_file, **kw
    )


@asynccontextmanager
async def registrar(
    settings: FederationSettings, engine: AsyncEngine, hub: FakeHub
) -> AsyncIterator[tuple[Registrar, HubClient, AgentState]]:
    state = AgentState.from_settings(settings)
    client = HubClient(settings, transport=httpx.MockTransport(hub.handler))
    reg = Registrar(settings, make_session_factory(engine), client, state)
    stop = asyncio.Event()
    task = asyncio.create_task(reg.run(stop))
    try:
        yield reg, client, state
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await client.aclose()


async def stored(engine: AsyncEngine) -> tuple[str | None, str | None]:
    async with make_session_factory(engine)() as session:
        row = await repo.get_state(session)
    assert row is not None
    return row.credential_id, row.cluster_id


async def test_register_resume_refused_and_register_again(
    spoke_engine: AsyncEngine, spoke_db: str, redis_url: str, spoke_prefix: str, tmp_path: Path, hub: FakeHub
) -> None:
    token_file = tmp_path / "bootstrap-token"
    settings = spoke_settings(spoke_db, redis_url, spoke_prefix, token_file)
    async with registrar(settings, spoke_engine, hub) as (reg, client, state):
        await eventually(lambda: _async(REGISTRATION in state.problems))
        assert not reg.ready.is_set()
        hub.tokens.add("tok-1")
        token_file.write_text("tok-1\n")  # the operator fills the Secret: picked up on the next try
        await eventually(lambda: _async(reg.ready.is_set()))
        assert client.credential is not None
        assert client.credential.credential_id == "cred1"
        assert REGISTRATION not in state.problems
    assert await stored(spoke_engine) == ("cred1", "cluster-1")

    # a restart resumes with the stored credential: no second registration
    hub.calls.clear()
    async with registrar(settings, spoke_engine, hub) as (reg, client, state):
        await eventually(lambda: _async(reg.ready.is_set()))
        assert hub.calls == []
        assert state.cluster_id == "cluster-1"

        # the hub revokes it: the next call gets 401, the spoke drops the credential
        hub.revoke_all()
        with pytest.raises(HubError) as refused:
            await client.commands(0)
        assert refused.value.kind is HubErrorKind.UNAUTHORIZED
        reg.failed(refused.value)
        assert not reg.ready.is_set()
        await eventually(lambda: _stored_is(spoke_engine, None))
        # the used token does not work again; the spoke keeps trying, and a new one does
        await eventually(lambda: _async(hub.calls.count("/federation/v1/register") >= 2))
        assert not reg.ready.is_set()
        hub.tokens.add("tok-2")
        token_file.write_text("tok-2")
        await eventually(lambda: _async(reg.ready.is_set()))
    assert await stored(spoke_engine) == ("cred2", "cluster-1")


async def test_rotation_when_asked_and_when_old(
    spoke_engine: AsyncEngine, spoke_db: str, redis_url: str, spoke_prefix: str, tmp_path: Path, hub: FakeHub
) -> None:
    token_file = tmp_path / "bootstrap-token"
    token_file.write_text("tok")
    hub.tokens.add("tok")
    settings = spoke_settings(spoke_db, redis_url, spoke_prefix, token_file)
    async with registrar(settings, spoke_engine, hub) as (reg, client, _):
        await eventually(lambda: _async(reg.ready.is_set()))
        reg.request_rotation()
        await eventually(
            lambda: _async(client.credential is not None and client.credential.credential_id == "cred2")
        )
    assert (await stored(spoke_engine))[0] == "cred2"
    assert hub.calls.count("/federation/v1/credentials/rotate") == 1

    aging = spoke_settings(spoke_db, redis_url, spoke_prefix, token_file, credential_max_age_s=0.5)
    async with registrar(aging, spoke_engine, hub) as (reg, client, _):
        await eventually(
            lambda: _async(client.credential is not None and client.credential.credential_id == "cred4")
        )
    assert hub.calls.count("/federation/v1/register") == 1


async def _async(value: Any) -> Any:
    return value


async def _stored_is(engine: AsyncEngine, credential_id: str | None) -> bool:
    return (await stored(engine))[0] == credential_id
