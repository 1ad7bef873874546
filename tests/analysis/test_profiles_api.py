"""``/v1/profiles``: list (filters, cursor pages), one profile by profile or workload key, reset,
404, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_analysis.app import create_app
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.db import make_engine, make_session_factory

from tests.analysis.conftest import T0, analysis_settings
from tests.analysis.profiles_factory import (
    HOURS,
    OTHER_DIGEST,
    PROFILE,
    WORKLOAD,
    connect_event,
    detector,
    exec_event,
    file_event,
)
from tests.analysis.test_profiles_store import batch, empty_profile_tables

pytestmark = [pytest.mark.db, pytest.mark.redis]

WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
WRITE_ONLY = "write-only-token-0123456789abcdef"
READY = T0 + 48 * HOURS


@dataclass
class Api:
    client: httpx.AsyncClient

    async def get(self, path: str, token: str | None = READ, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.get(path, headers=headers, params=params)

    async def post(self, path: str, token: str | None = WRITE) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post(path, headers=headers)


async def seed(database_url: str) -> None:
    """A ready profile used by two workloads (shop/api, web/api-v2), a learning one in ``batch``,
    and 10 more learning profiles in ``lab`` for paging."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    state = detector()
    try:
        for h in range(48):
            at = T0 + h * HOURS
            # the batch image starts at 12:00 on day two, in time order (one that arrived much
            # later than its time would be a backfill, learning from the time watched then)
            newcomer = (
                [exec_event("/usr/bin/sort", at, owner="batch", digest=OTHER_DIGEST, namespace="batch")]
                if h == 12
                else []
            )
            await batch(
                sessions,
                state,
                exec_event("/usr/local/bin/python3", at, parent="/usr/local/bin/gunicorn"),
                file_event("/usr/local/bin/python3", "/app/config.yaml", at),
                connect_event("/usr/local/bin/python3", "10.0.0.20", 5432, at),
                *newcomer,
            )
        await batch(
            sessions,
            state,
            exec_event("/usr/local/bin/python3", READY, parent="/usr/local/bin/gunicorn"),
            exec_event("/usr/bin/xmrig", READY),
            exec_event("/usr/bin/apt-get", READY, arguments="install -y curl"),
            exec_event(
                "/usr/local/bin/python3",
                READY,
                parent="/usr/local/bin/gunicorn",
                namespace="web",
                owner="api-v2",
            ),
        )
        for i in range(10):
            digest = f"{i:02d}" + "e" * 62
            await batch(
                sessions, state, exec_event("/bin/true", T0, owner=f"lab{i}", digest=digest, namespace="lab")
            )
    finally:
        await engine.dispose()


@pytest.fixture
async def api(db: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    await empty_profile_tables(db)
    await seed(db)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - name: writer\n    token: {WRITE_ONLY}\n    scopes: [write]\n")
    auth = ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ), tokens_file=tokens)
    app = create_app(analysis_settings(database_url=db, redis_url=redis_url), auth=auth)
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://analysis") as client:
                yield Api(client)
    finally:
        await empty_profile_tables(db)


async def test_get_by_workload_or_profile_key(api: Api) -> None:
    by_workload = await api.get(f"/v1/profiles/{WORKLOAD}")
    assert by_workload.status_code == 200, by_workload.text
    body = by_workload.json()
    assert body == (await api.get(f"/v1/profiles/{PROFILE}")).json()
    assert body["key"] == PROFILE
    assert body["state"] == "ready"
    assert body["learning_progress"] == 1.0
    assert body["first_seen"] == "2026-03-01T12:00:00Z"
    assert body["ready_at"] == "2026-03-03T12:00:00Z"
    assert body["workload_count"] == 2
    assert {w["workload_key"] for w in body["workloads"]} == {"prod/web/Deployment/api-v2", WORKLOAD}
    assert body["counts"]["processes"] == 1
    assert body["counts"]["events"] == 148
    process = body["top"]["processes"][0]
    assert process["value"] == "/usr/local/bin/python3"
    assert process["count"] == 50
    assert process["parents"] == {"/usr/local/bin/gunicorn": 50}
    assert body["top"]["destinations"][0]["value"] == "10.0.0.20:5432"
    assert body["top"]["ports"][0]["value"] == "5432"
    assert body["top"]["files"][0] == {
        "value": "/app/config.yaml",
        "count": 48,
        "first_seen": "2026-03-01T12:00:00Z",
        "last_seen": "2026-03-03T11:00:00Z",
        "parents": None,
        "hashes": None,
        "written": False,
    }
    assert {s["category"] for s in body["after_learning"]} == {"anomaly.unknown_process"}
    assert {s["value"] for s in body["after_learning"]} == {"/usr/bin/xmrig", "/usr/bin/apt-get"}
    drift = {(s["category"], s["value"]) for s in body["drift"]}
    assert ("drift.package_manager", "/usr/bin/apt-get") in drift
    assert all(s["last_alerted"] for s in body["drift"])
    features = {f["workload_key"]: f for f in body["features"]}  # the workload engine's baselines
    assert set(features) <= {"prod/web/Deployment/api-v2", WORKLOAD}
    assert all(f["state"] in ("learning", "ready") for f in features.values())
    top = (await api.get(f"/v1/profiles/{PROFILE}", top=1)).json()
    assert len(top["top"]["files"]) == 1


async def test_learning_progress_follows_event_time(api: Api) -> None:
    body = (await api.get("/v1/profiles/prod/batch/Deployment/batch")).json()
    assert body["state"] == "learning"
    assert body["learning_progress"] == 0.0
    assert body["first_seen"] == "2026-03-02T00:00:00Z"
    assert body["ready_at"] == "2026-03-04T00:00:00Z"


async def test_list_filters_and_pages(api: Api) -> None:
    everything: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        page = await api.get("/v1/profiles", limit=5, **({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        everything += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(everything) == 12
    assert len({p["key"] for p in everything}) == 12
    assert everything[-1]["key"] == PROFILE  # newest first
    ready = (await api.get("/v1/profiles", state="ready")).json()["items"]
    assert [p["key"] for p in ready] == [PROFILE]
    assert ready[0]["counts"]["workloads"] == 2
    web = (await api.get("/v1/profiles", namespace=["web", "batch"])).json()["items"]
    assert {p["key"] for p in web} == {PROFILE, f"sha256:{OTHER_DIGEST}"}
    assert (await api.get("/v1/profiles", state="sleeping")).status_code == 422
    bad = await api.get("/v1/profiles", cursor="nope!")
    assert bad.status_code == 422
    assert bad.json()["reason"] == "invalid_cursor"


async def test_reset_goes_back_to_learning(api: Api) -> None:
    before = (await api.get(f"/v1/profiles/{WORKLOAD}")).json()
    reset = await api.post(f"/v1/profiles/{WORKLOAD}/reset")
    assert reset.status_code == 200, reset.text
    body = reset.json()
    assert body["state"] == "learning"
    assert body["generation"] == before["generation"] + 1
    assert body["first_seen"] is None
    assert body["learning_progress"] == 0.0
    assert body["reset_at"]
    assert body["top"]["processes"] == []
    assert body["after_learning"] == []
    assert body["drift"] == []
    assert body["workload_count"] == 2  # still used by both
    assert (await api.get(f"/v1/profiles/{PROFILE}")).json() == body


async def test_unknown_profile_is_404_problem_json(api: Api) -> None:
    for path in ("/v1/profiles/prod/shop/Deployment/nope", f"/v1/profiles/sha256:{'0' * 64}"):
        missing = await api.get(path)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.json()["reason"] == "profile_not_found"
        assert (await api.post(f"{path}/reset")).status_code == 404
    # a percent-encoded key works too
    assert (await api.get(f"/v1/profiles/{quote(WORKLOAD, safe='')}")).status_code == 200


async def test_auth(api: Api) -> None:
    assert (await api.get("/v1/profiles", token=None)).status_code == 401
    assert (await api.get(f"/v1/profiles/{PROFILE}", token="wrong-token-0123456789")).status_code == 401
    assert (await api.get("/v1/profiles", token=WRITE_ONLY)).status_code == 403
    denied = await api.post(f"/v1/profiles/{PROFILE}/reset", token=READ)
    assert denied.status_code == 403
    assert denied.json()["reason"] == "insufficient_scope"
    assert (await api.post(f"/v1/profiles/{PROFILE}/reset", token=WRITE_ONLY)).status_code == 200
