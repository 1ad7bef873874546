"""Issue #4 integration: ingest, analysis and response as processes on 127.0.0.1 with the real
PostgreSQL and Redis. Findings from the Qualys double (ingest's poller) and events posted to
``POST /v1/events/{source}`` come out as findings (analysis API) and linked policies (response API)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from qcdr_ingest.qualys.demo_data import generate_findings
from qcdr_ingest.qualys.double import DoubleConfig, serve_double
from qcdr_ingest.qualys.normalize import normalize_all

from tests.ingest.events.factories import hubble_http_request
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.redis, pytest.mark.slow]


def _all(client: httpx.Client, url: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return items


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _falco_alerts(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "hostname": "node-1",
            "output": f"Notice A shell was spawned in a container (user=root shell=bash pod=web-{i})",
            "priority": "Notice",
            "rule": "Terminal shell in container",
            "source": "syscall",
            "tags": ["container", "shell", "mitre_execution", "T1059"],
            "time": (now - timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "output_fields": {
                "k8s.ns.name": "web",
                "k8s.pod.name": f"web-{i}",
                "container.id": f"c{i:011d}",
                "container.image.repository": "nginx",
                "proc.name": "bash",
                "proc.exepath": "/bin/bash",
                "user.name": "root",
            },
        }
        for i in range(n)
    ]


@pytest.fixture
def stack(tmp_path: Path, scratch_database_url: str, redis_url: str, redis_prefix: str) -> Iterator[Stack]:
    with Stack.migrated(
        tmp_path,
        database_url=scratch_database_url,
        redis_url=redis_url,
        prefix=redis_prefix,
        services=("ingest", "analysis", "response"),
    ) as s:
        yield s


def test_three_services_end_to_end(stack: Stack, shared_path: Path) -> None:
    findings = generate_findings(120, seed=31, now=datetime.now(UTC))
    qualys_valid = len(normalize_all(findings).events)
    with serve_double(DoubleConfig(findings=findings)) as qualys_url:
        ingest = stack.serve(
            "ingest",
            QUALYS_USERNAME="demo",
            QUALYS_PASSWORD="demo-password",
            QUALYS_GATEWAY_URL=qualys_url,
            QCDR_POLLER_INTERVAL="PT1S",
        )
        analysis = stack.serve("analysis")
        response = stack.serve("response")
        headers = {"Authorization": f"Bearer {stack.env['QCDR_API_TOKEN']}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            alerts = _falco_alerts(25)
            posted = client.post(
                f"{ingest.url}/v1/events/falco",
                content=orjson.dumps(alerts),
                headers={"Content-Type": "application/json"},
            )
            assert posted.status_code in (200, 202), posted.text
            tetragon = (shared_path / "corpora/tetragon/testdata/events.json").read_bytes()
            posted = client.post(
                f"{ingest.url}/v1/events/tetragon",
                content=tetragon,
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert posted.status_code in (200, 202), posted.text

            # a pod fetching the node's cloud credentials by hand, as Hubble's L7 visibility shows it
            imds = hubble_http_request(
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/node-role?token=abc",
                time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            )
            posted = client.post(
                f"{ingest.url}/v1/events/hubble",
                content=orjson.dumps([imds]),
                headers={"Content-Type": "application/json"},
            )
            assert posted.status_code in (200, 202), posted.text

            expected_sources = qualys_valid + len(alerts)

            def sources_done() -> bool:
                found = _all(client, f"{analysis.url}/v1/findings", kind="source")
                return len(found) >= expected_sources

            _wait(sources_done, 120, f"{expected_sources} source findings")
            source_findings = _all(client, f"{analysis.url}/v1/findings", kind="source")
            assert len(source_findings) == expected_sources  # exactly one per Qualys finding / Falco alert
            assert len({f["id"] for f in source_findings}) == expected_sources

            def linked() -> bool:
                policies = _all(client, f"{response.url}/v1/policies")
                return bool(policies)

            _wait(linked, 120, "policies from the findings")
            sample = source_findings[:10]

            def all_linked() -> bool:
                return all(
                    client.get(f"{response.url}/v1/findings/{f['id']}/policy").status_code == 200
                    for f in sample
                )

            _wait(all_linked, 120, "findings linked to policies")

            def http_finding() -> list[dict[str, Any]]:
                return _all(client, f"{analysis.url}/v1/findings", detector="http_rules")

            _wait(http_finding, 60, "the finding on the Hubble HTTP request")
            (found,) = http_finding()
            assert (found["category"], found["severity"], found["techniques"]) == (
                "cloud_credentials_access",
                "high",
                ["T1552.005"],
            )
            assert found["workload"]["pod"] == "api-1"
            assert "token=" not in found["explanation"]  # the query string stays out

            def http_linked() -> bool:
                link = client.get(f"{response.url}/v1/findings/{found['id']}/policy")
                return link.status_code == 200

            _wait(http_linked, 60, "the HTTP finding linked to a policy")
            policies = _all(client, f"{response.url}/v1/policies")
            one = policies[0]
            yaml_text = client.get(f"{response.url}/v1/policies/{one['id']}/yaml")
            assert yaml_text.status_code == 200
            assert "apiVersion: cilium.io/" in yaml_text.text

        # Without a token every protected route answers 401.
        for url in (f"{ingest.url}/v1/events", f"{analysis.url}/v1/findings", f"{response.url}/v1/policies"):
            assert httpx.get(url).status_code == 401
