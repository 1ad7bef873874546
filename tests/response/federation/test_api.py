"""The usual policy API on federated policies: the origin is shown, and a local approval is
announced with it (the federation spoke reports it to the hub)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine, make_session_factory
from qcdr_response.app import create_app
from qcdr_response.db.models import outbox
from qcdr_response.federation.handlers import FederatedPoliciesHandler
from qcdr_response.worker import make_federation
from sqlalchemy import select

from tests.response.federation.conftest import deliveries, hub_hash, placed, tracing_manifest
from tests.response.service.conftest import response_settings

pytestmark = [pytest.mark.db, pytest.mark.redis]

TOKEN = "write-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(committed_db: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = response_settings(database_url=committed_db, redis_url=redis_url)
    app = create_app(settings, auth=ApiAuthSettings(token=SecretStr(TOKEN)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://response") as http:
            yield http


async def test_a_proposed_federated_policy_is_approved_through_the_api(
    committed_db: str, client: httpx.AsyncClient
) -> None:
    manifest = tracing_manifest(policy_id="fp-api", generation=4)
    engine = make_engine(committed_db)
    sessions = make_session_factory(engine)
    try:
        handler = FederatedPoliciesHandler(sessions, make_federation(response_settings(), None))
        await handler(deliveries(placed(manifest, policy_id="fp-api", generation=4)))

        listed = await client.get("/v1/policies", params={"family": "federated"}, headers=HEADERS)
        assert listed.status_code == 200
        [item] = listed.json()["items"]
        origin = {"policy_id": "fp-api", "generation": 4, "content_hash": hub_hash(manifest)}
        assert (item["status"], item["federation"]) == ("proposed", origin)

        approved = await client.post(f"/v1/policies/{item['id']}/approve", headers=HEADERS)
        assert approved.status_code == 200
        assert approved.json()["status"] == "approved"

        async with sessions() as session:
            rows = (await session.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.id))).all()
        type_, data = rows[-1]
        payload = orjson.loads(data)["payload"]
        assert type_ == "response.policy_status_changed"
        assert (payload["from_status"], payload["to_status"], payload["federation"]) == (
            "proposed",
            "approved",
            origin,
        )
    finally:
        await engine.dispose()
