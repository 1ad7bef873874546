"""Registration with a bootstrap token, the spoke credential, rotation and revocation: the happy
paths and every refusal (401 with its reason, logged and counted, never the secret)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import ClusterHeartbeat
from qcdr_common.testing.logs import capture_logs
from qcdr_common.testing.wait import until_a_session_waits_for_a_lock
from qcdr_federation.hub.clusters.models import BootstrapTokenRow, ClusterRow, CredentialRow
from qcdr_federation.hub.clusters.service import declare_cluster as declare_cluster_service
from qcdr_federation.hub.clusters.service import register_bootstrap_digest
from qcdr_federation.hub.spoke_auth import sha256
from qcdr_federation.settings import FederationSettings
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.federation.conftest import (
    READ_HEADERS,
    WRITE_HEADERS,
    RegisteredSpoke,
    bearer,
    bootstrap_token,
    declare_cluster,
    register_spoke,
)

pytestmark = [pytest.mark.db, pytest.mark.redis]


JSON_BODY = {"content-type": "application/json"}


def failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("qcdr_federation_auth_failures_total", {"reason": reason})
    return value or 0.0


def heartbeat(**fields: Any) -> dict[str, Any]:
    return ClusterHeartbeat(sent_at=datetime.now(UTC), **fields).model_dump(mode="json")


def auth_logs(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "federation_auth_failed"]


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith('Bearer realm="qcdr-federation"')
    assert response.json()["reason"] == reason


async def test_register_heartbeat_and_the_cluster_view(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    await declare_cluster(hub_client, "eu-1", {"region": "eu", "env": "prod"})
    token = await bootstrap_token(hub_client, "eu-1")
    response = await hub_client.post(
        "/federation/v1/register",
        json={
            "cluster_name": "eu-1",
            "bootstrap_token": token,
            "labels": {"region": "us"},  # what the spoke says is recorded, not used
            "version": "1.2.3",
            "kubernetes_version": "v1.31.0",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert body["cluster_name"] == "eu-1"
    assert body["heartbeat_interval_s"] == 10.0
    credential = body["credential"]
    ident, _, secret = credential.partition(".")
    assert ident == body["credential_id"]
    assert len(secret) >= 40

    # only the digest is stored
    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions
    async with sessions() as session:
        row = await session.get(CredentialRow, ident)
        assert row is not None
        assert row.sha256 == sha256(credential)
        token_row = (await session.scalars(select(BootstrapTokenRow))).one()
        assert token_row.used_at is not None
        assert token_row.sha256 == sha256(token)

    ack = await hub_client.post(
        "/federation/v1/heartbeat",
        json=heartbeat(version="1.2.3", node_count=3, pod_count=40, counts={"events_forwarded": 7}),
        headers=bearer(credential),
    )
    assert ack.status_code == 200, ack.text
    assert ack.json()["health"] == "healthy"
    assert ack.json()["commands_pending"] == 0
    assert ack.json()["rotate_credential"] is False
    assert ack.json()["policies_etag"]

    view = (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()
    assert view["health"] == "healthy"
    assert view["labels"] == {"region": "eu", "env": "prod"}
    assert view["reported_labels"] == {"region": "us"}
    assert view["node_count"] == 3
    assert view["pod_count"] == 40
    assert view["counts"] == {"events_forwarded": 7}
    assert view["version"] == "1.2.3"
    assert view["kubernetes_version"] == "v1.31.0"
    listed = (await hub_client.get("/v1/clusters", headers=READ_HEADERS)).json()
    assert [c["name"] for c in listed] == ["eu-1"]


async def test_problems_reported_make_the_cluster_degraded(hub_client: httpx.AsyncClient) -> None:
    spoke = await register_spoke(hub_client, "eu-2")
    ack = await hub_client.post(
        "/federation/v1/heartbeat", json=heartbeat(problems=["response API 503"]), headers=spoke.headers
    )
    assert ack.json()["health"] == "degraded"
    view = (await hub_client.get("/v1/clusters/eu-2", headers=READ_HEADERS)).json()
    assert view["health"] == "degraded"
    assert view["problems"] == ["response API 503"]


async def _register(client: httpx.AsyncClient, name: str, token: str) -> httpx.Response:
    # json.dumps writes ASCII: a lone surrogate in the token goes as its escape, as JSON allows
    body = json.dumps({"cluster_name": name, "bootstrap_token": token})
    return await client.post("/federation/v1/register", content=body, headers=JSON_BODY)


async def _heartbeat(client: httpx.AsyncClient, credential: str) -> httpx.Response:
    body = {"sent_at": datetime.now(UTC).isoformat(), "version": "test"}
    return await client.post("/federation/v1/heartbeat", json=body, headers=bearer(credential))


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"problems": ["disk \udc80 full"]}, ": problems.0: text is not valid UTF-8"),
        ({"counts": {"events_forwarded": 2**64}}, ".counts.events_forwarded: Input should be less than"),
        ({"counts": {"events_forwarded": -1}}, ".counts.events_forwarded: Input should be greater than"),
        ({"node_count": 2**63}, ".node_count: Input should be less than"),
        (
            {"actions": [{"action_id": "a", "action": "kill", "state": "pending", "target": {"pid": 2**64}}]},
            ".actions.0: target.pid: integer is outside the 64-bit range",
        ),
    ],
    ids=[
        "lone-surrogate",
        "count-past-64-bits",
        "negative-count",
        "node-count-past-int64",
        "int-in-free-form",
    ],
)
async def test_a_heartbeat_the_hub_could_not_store_is_422(
    hub_client: httpx.AsyncClient, fields: dict[str, Any], detail: str
) -> None:
    """JSON carries lone surrogates and integers of any size; the database and orjson do not. A
    heartbeat with one is the spoke's bad input (422 naming the field), not a 500."""
    spoke = await register_spoke(hub_client, "eu-1")
    body = json.dumps({"sent_at": datetime.now(UTC).isoformat(), **fields})
    response = await hub_client.post(
        "/federation/v1/heartbeat", content=body, headers={**spoke.headers, **JSON_BODY}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"body{detail}"), response.json()["detail"]


async def test_a_lost_registration_answer_can_be_retried_until_the_spoke_heartbeats(
    hub_client: httpx.AsyncClient,
) -> None:
    await declare_cluster(hub_client, "eu-1")
    token = await bootstrap_token(hub_client, "eu-1")
    lost = await _register(hub_client, "eu-1", token)
    assert lost.status_code == 201
    # the answer never reached the spoke: it tries again with the same token and gets a new
    # credential; the one in the lost answer stops working
    retried = await _register(hub_client, "eu-1", token)
    assert retried.status_code == 201
    assert retried.json()["credential"] != lost.json()["credential"]
    assert (await _heartbeat(hub_client, lost.json()["credential"])).status_code == 401
    assert (await _heartbeat(hub_client, retried.json()["credential"])).status_code == 200
    # once the spoke heartbeated, the token is spent
    assert_refused(await _register(hub_client, "eu-1", token), "invalid_bootstrap_token")


async def test_every_bootstrap_refusal_is_401_logged_and_counted(
    hub_client: httpx.AsyncClient, hub_app: Any
) -> None:
    await declare_cluster(hub_client, "eu-1")
    await declare_cluster(hub_client, "eu-2")
    used = await bootstrap_token(hub_client, "eu-1")
    registered = await _register(hub_client, "eu-1", used)
    assert registered.status_code == 201
    # the spoke got its credential and used it: the token is spent for good
    assert (await _heartbeat(hub_client, registered.json()["credential"])).status_code == 200

    expired = await bootstrap_token(hub_client, "eu-1")
    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions
    async with sessions() as session:
        await session.execute(
            update(BootstrapTokenRow)
            .where(BootstrapTokenRow.sha256 == sha256(expired))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()

    revoked = await bootstrap_token(hub_client, "eu-1")
    revoked_id = revoked.partition(".")[0]
    response = await hub_client.delete(
        f"/v1/clusters/eu-1/bootstrap-tokens/{revoked_id}", headers=WRITE_HEADERS
    )
    assert response.status_code == 204

    for_other = await bootstrap_token(hub_client, "eu-2")

    cases = [
        ("unknown", "eu-1", "0123456789abcdef.not-a-token-the-hub-made"),
        ("used", "eu-1", used),
        ("expired", "eu-1", expired),
        ("revoked", "eu-1", revoked),
        ("wrong_cluster", "eu-1", for_other),
        ("unknown", "eu-1", "0123456789abcdef.not-utf-8-\ud800"),  # no 500 hashing it
    ]
    before = failures("invalid_bootstrap_token")
    for why, name, token in cases:
        with capture_logs() as logs:
            response = await _register(hub_client, name, token)
        assert_refused(response, "invalid_bootstrap_token")
        [entry] = auth_logs(logs)
        assert entry["why"] == why
        assert entry["reason"] == "invalid_bootstrap_token"
        assert entry["cluster_name"] == name
        assert entry["client"] == "10.1.2.3"
        assert token not in repr(logs)  # never the secret
    assert failures("invalid_bootstrap_token") == before + len(cases)

    # the token for eu-2 was not used up by the refused attempt, and it counted the attempt
    async with sessions() as session:
        row = (
            await session.scalars(
                select(BootstrapTokenRow).where(BootstrapTokenRow.sha256 == sha256(for_other))
            )
        ).one()
        assert row.used_at is None
        assert row.attempts == 1
    assert (await _register(hub_client, "eu-2", for_other)).status_code == 201


async def test_register_for_a_removed_cluster_is_refused(hub_client: httpx.AsyncClient) -> None:
    await declare_cluster(hub_client, "gone")
    token = await bootstrap_token(hub_client, "gone")
    assert (await hub_client.delete("/v1/clusters/gone", headers=WRITE_HEADERS)).status_code == 204
    # removal revoked the unused token
    assert_refused(await _register(hub_client, "gone", token), "invalid_bootstrap_token")
    response = await hub_client.post("/v1/clusters/gone/bootstrap-tokens", json={}, headers=WRITE_HEADERS)
    assert response.status_code == 409
    assert response.json()["reason"] == "cluster_removed"


async def test_a_bad_register_body_is_422(hub_client: httpx.AsyncClient) -> None:
    response = await hub_client.post(
        "/federation/v1/register", json={"cluster_name": "Not_A_Name", "bootstrap_token": "x"}
    )
    assert response.status_code == 422
    assert "x" not in str(response.json().get("errors"))  # the token is not echoed


async def test_credential_refusals(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    path = "/federation/v1/heartbeat"

    async def refused(headers: dict[str, str], reason: str, **expected: Any) -> None:
        before = failures(reason)
        with capture_logs() as logs:
            response = await hub_client.post(path, json=heartbeat(), headers=headers)
        assert_refused(response, reason)
        [entry] = auth_logs(logs)
        assert entry["reason"] == reason
        assert entry["client"] == "10.1.2.3"
        for key, value in expected.items():
            assert entry[key] == value
        assert "secret" not in entry
        assert spoke.credential not in repr(logs)
        assert failures(reason) == before + 1

    await refused({}, "missing_credential")
    await refused({"Authorization": "Basic abc"}, "malformed_credential")
    await refused(bearer("no-dot-here"), "malformed_credential")
    # right id, wrong secret: as unknown as an id nobody issued
    await refused(
        bearer(f"{spoke.credential_id}.{'A' * 43}"), "unknown_credential", credential_id=spoke.credential_id
    )
    await refused(bearer(f"{'0' * 16}.{'A' * 43}"), "unknown_credential", credential_id="0" * 16)
    # the operator API token is not a spoke credential
    await refused(WRITE_HEADERS, "malformed_credential")

    # revoked by the operator
    response = await hub_client.post("/v1/clusters/eu-1/credentials/revoke", headers=WRITE_HEADERS)
    assert response.json() == {"cluster_name": "eu-1", "revoked": 1}
    await refused(spoke.headers, "revoked_credential", credential_id=spoke.credential_id, cluster_name="eu-1")

    # a new registration revokes the credentials before it
    token = await bootstrap_token(hub_client, "eu-1")
    first = (await _register(hub_client, "eu-1", token)).json()
    token = await bootstrap_token(hub_client, "eu-1")
    second = (await _register(hub_client, "eu-1", token)).json()
    await refused(bearer(first["credential"]), "revoked_credential")
    ok = await hub_client.post(path, json=heartbeat(), headers=bearer(second["credential"]))
    assert ok.status_code == 200

    # removing the cluster stops its credential
    assert (await hub_client.delete("/v1/clusters/eu-1", headers=WRITE_HEADERS)).status_code == 204
    await refused(bearer(second["credential"]), "cluster_removed", cluster_name="eu-1")


async def test_rotation_keeps_the_old_credential_for_the_overlap_then_refuses_it(
    hub_client: httpx.AsyncClient, hub_app: Any
) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    response = await hub_client.post("/federation/v1/credentials/rotate", headers=spoke.headers)
    assert response.status_code == 201, response.text
    new = RegisteredSpoke(
        "eu-1", spoke.cluster_id, response.json()["credential_id"], response.json()["credential"]
    )
    assert new.credential_id != spoke.credential_id

    # both work during the overlap
    for headers in (spoke.headers, new.headers):
        assert (
            await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=headers)
        ).status_code == 200

    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions
    async with sessions() as session:
        old = await session.get(CredentialRow, spoke.credential_id)
        assert old is not None
        assert old.expires_at is not None
        overlap = (old.expires_at - datetime.now(UTC)).total_seconds()
        assert 250 < overlap <= 300
        # the overlap ends
        old.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()
    with capture_logs() as logs:
        response = await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=spoke.headers)
    assert_refused(response, "expired_credential")
    assert auth_logs(logs)[0]["credential_id"] == spoke.credential_id
    assert (
        await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=new.headers)
    ).status_code == 200


async def test_operator_requested_rotation_goes_through_the_heartbeat_ack(
    hub_client: httpx.AsyncClient,
) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    response = await hub_client.post("/v1/clusters/eu-1/credentials/rotate", headers=WRITE_HEADERS)
    assert response.status_code == 202
    assert response.json()["cluster_name"] == "eu-1"
    assert (await hub_client.get("/v1/clusters/eu-1", headers=READ_HEADERS)).json()[
        "rotate_requested"
    ] is True
    ack = await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=spoke.headers)
    assert ack.json()["rotate_credential"] is True
    rotated = await hub_client.post("/federation/v1/credentials/rotate", headers=spoke.headers)
    assert rotated.status_code == 201
    ack = await hub_client.post(
        "/federation/v1/heartbeat", json=heartbeat(), headers=bearer(rotated.json()["credential"])
    )
    assert ack.json()["rotate_credential"] is False
    response = await hub_client.post("/v1/clusters/nope/credentials/rotate", headers=WRITE_HEADERS)
    assert response.status_code == 404


async def test_last_used_is_written_at_most_once_a_minute(
    hub_client: httpx.AsyncClient, hub_app: Any
) -> None:
    spoke = await register_spoke(hub_client, "eu-1")
    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions

    async def last_used() -> datetime | None:
        async with sessions() as session:
            row = await session.get(CredentialRow, spoke.credential_id)
            assert row is not None
            return row.last_used_at

    await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=spoke.headers)
    first = await last_used()
    assert first is not None
    await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=spoke.headers)
    assert await last_used() == first  # no write within the minute
    async with sessions() as session:
        await session.execute(
            update(CredentialRow)
            .where(CredentialRow.id == spoke.credential_id)
            .values(last_used_at=first - timedelta(minutes=2))
        )
        await session.commit()
    await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=spoke.headers)
    later = await last_used()
    assert later is not None
    assert later > first


async def test_declare_patch_remove_and_redeclare(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    created = await hub_client.post(
        "/v1/clusters", json={"name": "eu-1", "labels": {"env": "prod"}}, headers=WRITE_HEADERS
    )
    assert created.status_code == 201
    assert created.json()["health"] == "pending"
    again = await hub_client.post("/v1/clusters", json={"name": "eu-1", "labels": {}}, headers=WRITE_HEADERS)
    assert again.status_code == 409
    assert again.json()["reason"] == "cluster_exists"
    patched = await hub_client.patch(
        "/v1/clusters/eu-1", json={"labels": {"env": "dev"}}, headers=WRITE_HEADERS
    )
    assert patched.status_code == 200
    assert patched.json()["labels"] == {"env": "dev"}
    bad = await hub_client.patch("/v1/clusters/eu-1", json={"labels": {"-bad": "x"}}, headers=WRITE_HEADERS)
    assert bad.status_code == 422
    bad = await hub_client.post("/v1/clusters", json={"name": "Bad_Name"}, headers=WRITE_HEADERS)
    assert bad.status_code == 422
    assert (
        await hub_client.patch("/v1/clusters/nope", json={"labels": {}}, headers=WRITE_HEADERS)
    ).status_code == 404
    assert (await hub_client.get("/v1/clusters/nope", headers=READ_HEADERS)).status_code == 404

    spoke = await register_spoke_existing(hub_client, "eu-1")
    assert (await hub_client.delete("/v1/clusters/eu-1", headers=WRITE_HEADERS)).status_code == 204
    assert (await hub_client.delete("/v1/clusters/eu-1", headers=WRITE_HEADERS)).status_code == 404
    assert (await hub_client.get("/v1/clusters", headers=READ_HEADERS)).json() == []

    # declared again: a new, unregistered cluster; the old credential stays dead
    redeclared = await hub_client.post(
        "/v1/clusters", json={"name": "eu-1", "labels": {"env": "prod"}}, headers=WRITE_HEADERS
    )
    assert redeclared.status_code == 201
    assert redeclared.json()["health"] == "pending"
    assert redeclared.json()["registered_at"] is None
    response = await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=spoke.headers)
    assert_refused(response, "revoked_credential")
    async with hub_app.state.sessions() as session:
        assert len((await session.scalars(select(ClusterRow))).all()) == 1


async def register_spoke_existing(client: httpx.AsyncClient, name: str) -> RegisteredSpoke:
    token = await bootstrap_token(client, name)
    body = (await _register(client, name, token)).json()
    return RegisteredSpoke(name, body["cluster_id"], body["credential_id"], body["credential"])


async def test_a_bootstrap_token_for_an_undeclared_cluster_makes_its_row(
    hub_client: httpx.AsyncClient,
) -> None:
    response = await hub_client.post(
        "/v1/clusters/new-one/bootstrap-tokens", json={"ttl_s": 60}, headers=WRITE_HEADERS
    )
    assert response.status_code == 201
    body = response.json()
    expires = datetime.fromisoformat(body["expires_at"])
    assert 50 < (expires - datetime.now(UTC)).total_seconds() <= 60
    view = (await hub_client.get("/v1/clusters/new-one", headers=READ_HEADERS)).json()
    assert view["health"] == "pending"
    assert view["labels"] == {}
    for ttl_s in (0, 30 * 86_400 + 1):
        bad = await hub_client.post(
            "/v1/clusters/new-one/bootstrap-tokens", json={"ttl_s": ttl_s}, headers=WRITE_HEADERS
        )
        assert bad.status_code == 422


def test_the_configured_default_ttl_is_capped_like_the_api() -> None:
    # the default for a request without ttl_s: beyond the cap it was every such request's 500
    # (an expiry past the year 9999), now the service does not start with it
    assert FederationSettings(_env_file=None, bootstrap_token_ttl_s=30 * 86_400).bootstrap_token_ttl_s
    with pytest.raises(ValidationError, match="bootstrap_token_ttl_s"):
        FederationSettings(_env_file=None, bootstrap_token_ttl_s=1e12)


async def test_bootstrap_digests_from_the_controller(hub_client: httpx.AsyncClient, hub_app: Any) -> None:
    """The CRD controller knows a token only by its SHA-256 (from a Secret): registered once,
    idempotently, and the spoke registers with the token itself."""
    token = "a-secret-from-a-kubernetes-secret-0123456789"
    expires = datetime.now(UTC) + timedelta(hours=1)
    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions
    for _ in range(2):
        async with sessions() as session:
            await declare_cluster_service(session, "crd-1", {"env": "prod"}, source="crd")
            await register_bootstrap_digest(
                session,
                "crd-1",
                sha256(token),
                source="crd",
                created_by="FederatedCluster/crd-1",
                expires_at=expires,
            )
            await session.commit()
    async with sessions() as session:
        rows = (await session.scalars(select(BootstrapTokenRow))).all()
        assert len(rows) == 1
        assert rows[0].source == "crd"
        assert rows[0].expires_at == expires
    beats = REGISTRY.get_sample_value("qcdr_federation_heartbeats_total") or 0.0
    response = await _register(hub_client, "crd-1", token)
    assert response.status_code == 201, response.text
    credential = response.json()["credential"]
    assert (
        await hub_client.post("/federation/v1/heartbeat", json=heartbeat(), headers=bearer(credential))
    ).status_code == 200
    assert REGISTRY.get_sample_value("qcdr_federation_heartbeats_total") == beats + 1
    # used: registering the digest again changes nothing, the token stays used
    async with sessions() as session:
        await register_bootstrap_digest(
            session,
            "crd-1",
            sha256(token),
            source="crd",
            created_by="FederatedCluster/crd-1",
            expires_at=None,
        )
        await session.commit()
    assert_refused(await _register(hub_client, "crd-1", token), "invalid_bootstrap_token")
    view = (await hub_client.get("/v1/clusters/crd-1", headers=READ_HEADERS)).json()
    assert view["source"] == "crd"
    assert view["labels"] == {"env": "prod"}
    assert view["health"] == "healthy"


async def test_a_verified_credential_is_remembered_briefly_and_forgotten_on_revocation(
    hub_app: Any, hub_client: httpx.AsyncClient
) -> None:
    hub_app.state.settings = hub_app.state.settings.model_copy(update={"credential_cache_s": 60.0})
    hub_app.state.__dict__.pop("verified_credentials", None)
    await declare_cluster(hub_client, "eu-1")
    registered = await _register(hub_client, "eu-1", await bootstrap_token(hub_client, "eu-1"))
    credential = registered.json()["credential"]
    assert (await _heartbeat(hub_client, credential)).status_code == 200
    # revoked behind the API's back (another replica): this replica still trusts it for a while
    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions
    async with sessions() as session:
        await session.execute(update(CredentialRow).values(revoked_at=datetime.now(UTC)))
        await session.commit()
    assert (await _heartbeat(hub_client, credential)).status_code == 200
    # revoked through this replica's API: refused at once
    r = await hub_client.post("/v1/clusters/eu-1/credentials/revoke", headers=WRITE_HEADERS)
    assert r.status_code == 200
    assert_refused(await _heartbeat(hub_client, credential), "revoked_credential")


async def test_a_registration_during_the_controllers_resync_does_not_deadlock(
    hub_client: httpx.AsyncClient, hub_app: Any, federation_db: str
) -> None:
    """The controller's resync updates the cluster, then stores the Secret's token again; a spoke
    presenting that token meanwhile must wait for it, not lock the token first (that deadlocked:
    the insert waited on the spoke's token update, the spoke on the controller's cluster)."""
    sessions: async_sessionmaker[AsyncSession] = hub_app.state.sessions
    token = "resync-token-0123456789abcdef0123456789"
    digest = sha256(token)
    async with sessions() as session:
        await declare_cluster_service(session, "eu-9", {}, source="crd")
        await register_bootstrap_digest(
            session, "eu-9", digest, source="crd", created_by="test", expires_at=None
        )
        await session.commit()
    body = {"cluster_name": "eu-9", "bootstrap_token": token, "version": "0.1.0"}
    async with sessions() as controller:
        await declare_cluster_service(controller, "eu-9", {"env": "prod"}, source="crd")
        spoke = asyncio.create_task(hub_client.post("/federation/v1/register", json=body))
        # the spoke's request waits on its first lock (the controller's cluster row)
        assert await until_a_session_waits_for_a_lock(federation_db)
        await register_bootstrap_digest(
            controller, "eu-9", digest, source="crd", created_by="controller", expires_at=None
        )
        await controller.commit()
    response = await asyncio.wait_for(spoke, 15)
    assert response.status_code == 201, response.text
