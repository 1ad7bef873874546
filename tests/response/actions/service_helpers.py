"""A running response service for action tests: the app with its worker (real PostgreSQL and
Redis) in front of the shared Kubernetes API test server, and an API client with tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.wait import eventually_async
from qcdr_response.app import create_app

from tests.response.service.conftest import response_settings

WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "api-7d9f-x2",
        "namespace": "payments",
        "uid": "0b6f1b7e-6c1e-4d38-9a37-0c2f7b0e5a11",
        "labels": {"app": "api", "pod-template-hash": "7d9f"},
    },
    "spec": {"nodeName": "node-1", "containers": [{"name": "api", "image": "registry.example/api:1"}]},
}


@dataclass
class Service:
    client: httpx.AsyncClient
    k8s: K8sTestServer

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {READ}"}, params=params)

    async def post(self, path: str, json: Any = None, token: str = WRITE) -> httpx.Response:
        return await self.client.post(path, headers={"Authorization": f"Bearer {token}"}, json=json)

    async def action(self, action_id: int) -> dict[str, Any]:
        r = await self.get(f"/v1/actions/{action_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def until_state(self, action_id: int, *states: str, within_s: float = 20.0) -> dict[str, Any]:
        async def check() -> bool:
            return (await self.action(action_id))["state"] in states

        await eventually(check, within_s)
        return await self.action(action_id)

    def policies(self) -> dict[tuple[str | None, str], dict[str, Any]]:
        return self.k8s.objects("TracingPolicyNamespaced")


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    await eventually_async(check, within_s, what="the service")


@contextlib.asynccontextmanager
async def running_service(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Service]:
    """The service with ``overrides`` on top of test settings; the test server holds ``POD``."""
    k8s = K8sTestServer()
    with k8s.serve():
        k8s.seed(POD)
        values: dict[str, Any] = {
            "database_url": committed_db,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "consume_in_app": True,
            "kubeconfig": k8s.write_kubeconfig(tmp_path / "kubeconfig"),
            "builtin_playbooks": False,
            "lease_poll_s": 0.1,
        }
        values.update(overrides)
        app = create_app(
            response_settings(**values),
            auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)),
        )
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://response") as client:
                yield Service(client, k8s)
