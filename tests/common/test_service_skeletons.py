"""Every service starts, serves health and metrics, and checks its real dependencies."""

import asyncio
import importlib

import httpx
import pytest
from asgi_lifespan import LifespanManager

SERVICES = ["ingest", "analysis", "response", "admission", "federation"]
# Readiness beyond the datastores: admission is ready once its policy set is loaded (from its own
# tables: migrated first here) and the findings reader has bootstrapped.
EXTRA_CHECKS = {"admission": {"policies": "ok", "runtime": "ok"}}


@pytest.mark.db
@pytest.mark.redis
@pytest.mark.parametrize("service", SERVICES)
async def test_health_ready_and_metrics(
    service: str, database_url: str, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    # a prefix of its own: the apps' consumers must not pick up what anything else left in the
    # machine's Redis under the default prefix (and write it into this worker's database)
    monkeypatch.setenv("QCDR_REDIS_PREFIX", redis_prefix)
    settings_mod = importlib.import_module(f"qcdr_{service}.settings")
    settings_mod.get_settings.cache_clear()
    if service in EXTRA_CHECKS:
        await asyncio.to_thread(importlib.import_module(f"qcdr_{service}.db").upgrade, database_url)
    app = importlib.import_module(f"qcdr_{service}.app").create_app()
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            for _ in range(100):  # a policy set or a bootstrap may take a moment after start-up
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.05)
                ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {
                "postgres": "ok",
                "redis": "ok",
                **EXTRA_CHECKS.get(service, {}),
            }
            assert (await client.get("/metrics")).status_code == 200
    settings_mod.get_settings.cache_clear()


@pytest.mark.parametrize("service", SERVICES)
async def test_readyz_reports_unreachable_redis(
    service: str, database_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QCDR_REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    settings_mod = importlib.import_module(f"qcdr_{service}.settings")
    settings_mod.get_settings.cache_clear()
    app = importlib.import_module(f"qcdr_{service}.app").create_app()
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["redis"].startswith("failed")
    settings_mod.get_settings.cache_clear()
