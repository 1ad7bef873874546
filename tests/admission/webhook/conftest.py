"""Fixtures for the webhook tests: AdmissionReview factories, an in-process app without a
database, and a migrated database of the module's own for the decision log."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_admission.app import create_app
from qcdr_admission.db import upgrade
from qcdr_admission.engine import PssConfig, PssEngine
from qcdr_admission.settings import AdmissionSettings
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.testing.plugin import scratch_database

WRITE = "admission-write-token"
READ = "admission-read-token"
ADMISSION_TABLES = ("admission_decisions", "admission_outbox")


def restricted_pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    """A Pod that passes restricted (override spec fields to break it)."""
    body: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "app",
                "image": "registry.example.com/app:1.0",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"}, "spec": body}


def baseline_pod(name: str = "web") -> dict[str, Any]:
    """Passes baseline, violates restricted (no runAsNonRoot, seccomp, capabilities, escalation)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


def privileged_pod(name: str = "bad") -> dict[str, Any]:
    pod = baseline_pod(name)
    pod["spec"]["hostNetwork"] = True
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    return pod


def review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    kind: str | None = None,
    group: str = "",
    version: str = "v1",
    subresource: str | None = None,
    dry_run: bool = False,
    namespace: str | None = "shop",
    user: str = "alice@example.com",
) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview as the API server sends it."""
    kind = kind or (obj or {}).get("kind", "Pod")
    resource = {"Pod": "pods", "Deployment": "deployments", "CronJob": "cronjobs"}.get(
        kind, kind.lower() + "s"
    )
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": ((obj or {}).get("metadata") or {}).get("name"),
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    if subresource:
        request["subResource"] = subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def deployment_of(pod: dict[str, Any], name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": copy.deepcopy(pod["spec"])},
        },
    }


def admission_settings(**overrides: Any) -> AdmissionSettings:
    values: dict[str, Any] = {"decisions_enabled": False, "outbox_poll_s": 0.02}
    values.update(overrides)
    return AdmissionSettings(_env_file=None, **values)


@pytest.fixture
async def webhook() -> AsyncIterator[httpx.AsyncClient]:
    """The app with the default PSS engine only (enforce baseline, warn restricted), so the shapes
    asserted do not depend on the built-in policies; no decision log."""
    app = create_app(
        engine=PssEngine(PssConfig()),
        settings=admission_settings(),
        auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)),
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://admission") as client:
            yield client


@pytest.fixture(scope="module")
def committed_database_url(base_database_url: str) -> Iterator[str]:
    """A migrated database of this module's own (the app commits for real)."""
    with scratch_database(base_database_url, "qcdr_admission") as url:
        upgrade(url)
        yield url


@pytest.fixture
async def committed_db(committed_database_url: str) -> AsyncIterator[str]:
    yield committed_database_url
    connection = await asyncpg.connect(committed_database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(f"TRUNCATE {', '.join(ADMISSION_TABLES)} RESTART IDENTITY")
    finally:
        await connection.close()
