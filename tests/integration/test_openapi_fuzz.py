"""Issue #4: schemathesis against each service's OpenAPI. With a valid token no generated request
gets a 5xx; without a token every protected route answers 401."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from qcdr_common.testing.plugin import scratch_database

from tests.integration.stack import Proc, Stack

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.redis, pytest.mark.slow]

SERVICES = ("ingest", "analysis", "response")
PUBLIC = {"/healthz", "/readyz", "/metrics"}
EXAMPLES = 25  # per operation; the suite must stay within its time budget on 2 cores


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, base_database_url: str, redis_url: str
) -> Iterator[tuple[Stack, dict[str, Proc]]]:
    # A database of its own: the services commit whatever the fuzzer posts, and those rows must not
    # end up in the worker's shared database that other tests read.
    with scratch_database(base_database_url, "qcdr_fuzz") as database_url:
        stack = Stack.create(
            tmp_path_factory.mktemp("fuzz"),
            database_url=database_url,
            redis_url=redis_url,
            prefix=f"fuzz-{uuid.uuid4().hex[:8]}",
            token=f"tok-{uuid.uuid4().hex}",
            extra_env={"QCDR_POLLER_ENABLED": "false"},
        )
        try:
            stack.migrate(*SERVICES)
            procs = {name: stack.serve(name) for name in SERVICES}
            yield stack, procs
        finally:
            stack.close()


def _schema(proc: Proc, token: str) -> Any:
    spec = httpx.get(f"{proc.url}/openapi.json", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert spec.status_code == 200, spec.text
    return schemathesis.openapi.from_dict(spec.json())


@pytest.mark.parametrize("service", SERVICES)
def test_no_server_errors_with_a_token(service: str, running: tuple[Stack, dict[str, Proc]]) -> None:
    stack, procs = running
    proc = procs[service]
    token = stack.env["QCDR_API_TOKEN"]
    schema = _schema(proc, token)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        for operation in operations:

            @settings(
                max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                kwargs = case.as_transport_kwargs(base_url=proc.url)
                headers = {**(kwargs.get("headers") or {}), "Authorization": f"Bearer {token}"}
                cookies = kwargs.get("cookies") or {}
                if cookies:  # per-request cookies are deprecated in httpx: send the header
                    headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
                response = client.request(
                    kwargs["method"],
                    kwargs["url"],
                    params=kwargs.get("params"),
                    headers=headers,
                    content=kwargs.get("content"),
                    json=kwargs.get("json"),
                )
                if response.status_code >= 500:
                    failures.append(
                        f"{kwargs['method']} {kwargs['url']} → {response.status_code}: {response.text[:300]}"
                    )

            check()
    assert failures == [], "\n".join(failures[:10]) + f"\nlogs:\n{proc.tail()}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_protected_route_needs_a_token(service: str, running: tuple[Stack, dict[str, Proc]]) -> None:
    stack, procs = running
    proc = procs[service]
    schema = _schema(proc, stack.env["QCDR_API_TOKEN"]).raw_schema
    checked = 0
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        for path, methods in schema["paths"].items():
            if path in PUBLIC:
                continue
            concrete = path
            for name in [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]:
                concrete = concrete.replace("{" + name + "}", "x")
            for method in methods:
                if method.lower() not in {"get", "post", "put", "patch", "delete"}:
                    continue
                for auth in (None, "Bearer wrong-token", "Basic abc"):
                    headers = {"Authorization": auth} if auth else {}
                    response = client.request(method.upper(), concrete, headers=headers)
                    assert response.status_code == 401, (
                        f"{method.upper()} {path} with {auth!r}: {response.status_code}"
                    )
                    checked += 1
    assert checked > 0


def test_health_and_metrics_stay_public(running: tuple[Stack, dict[str, Proc]], tmp_path: Path) -> None:
    _, procs = running
    for proc in procs.values():
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"{proc.url}{path}", timeout=10).status_code == 200
