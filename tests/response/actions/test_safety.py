"""Attempts to break the safety rules through the response service's API: dry-run, protected
namespaces and workloads, rate limits, path and name validation, and scopes. None may get a
change into the cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.response.actions.service_helpers import POD, READ, Service, running_service

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

ISOLATE = {"action": "isolate_pod", "target": {"namespace": "payments", "pod": POD["metadata"]["name"]}}


def mutations(service: Service) -> list[Any]:
    return [r for r in service.k8s.requests if r.method not in ("GET", "HEAD")]


async def test_dry_run_mode_cannot_be_talked_out_of(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with running_service(committed_db, redis_url, redis_prefix, tmp_path) as service:
        created = await service.post("/v1/actions", {**ISOLATE, "dry_run": False, "lease": "1h"})
        assert created.status_code == 201, created.text
        assert created.json()["dry_run"] is True
        done = await service.until_state(created.json()["id"], "dry_run")
        assert done["lease_expires_at"] is None
        assert "would" in (done["message"] or "") or done["details"]
        sent = mutations(service)
        assert sent, "a dry run still asks the API server to validate its requests"
        assert all(r.query.get("dryRun") == "All" for r in sent), [(r.method, r.path, r.query) for r in sent]
        assert service.k8s.objects("CiliumNetworkPolicy") == {}
        assert service.k8s.objects("NetworkPolicy") == {}
        pod = service.k8s.objects("Pod")[("payments", POD["metadata"]["name"])]
        assert "qcdr.qualys.com/quarantine" not in pod["metadata"].get("labels", {})
        undo = await service.post(f"/v1/actions/{done['id']}/undo")
        assert undo.status_code == 409
        assert "dry run" in undo.json()["detail"]


async def test_protected_namespaces_workloads_and_rate_limits_hold(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with running_service(
        committed_db,
        redis_url,
        redis_prefix,
        tmp_path,
        actions_mode="enforce",
        protected_workloads=("payments/ledger-*",),
        action_rate_per_hour=1,
    ) as service:
        for target in (
            {"namespace": "kube-system", "pod": "coredns-1"},
            {"namespace": "qualys-system", "pod": "response-1"},
            {"namespace": "qualys-node-agent", "pod": "agent-1"},
            {"namespace": "payments", "pod": "x-1", "owner_name": "ledger-writer"},
        ):
            r = await service.post("/v1/actions", {"action": "isolate_pod", "target": target})
            assert r.status_code == 201, r.text
            assert r.json()["state"] == "skipped"
            assert "protected" in r.json()["message"]
        assert mutations(service) == []
        first = await service.post("/v1/actions", ISOLATE)
        await service.until_state(first.json()["id"], "succeeded")
        second = await service.post("/v1/actions", {**ISOLATE, "action": "isolate_pod"})
        assert second.json()["state"] == "skipped"
        assert "rate limit" in second.json()["message"]
        assert len(service.k8s.objects("CiliumNetworkPolicy")) == 1


MALFORMED: list[dict[str, Any]] = [
    {
        "action": "quarantine_file",
        "target": {"container_id": "ab" * 32, "node": "n1", "path": "/tmp/../etc/passwd"},
    },
    {"action": "quarantine_file", "target": {"container_id": "ab" * 32, "node": "n1", "path": "tmp/x"}},
    {"action": "quarantine_file", "target": {"container_id": "ab" * 32, "node": "n1", "path": "/tmp//x"}},
    {
        "action": "quarantine_file",
        "target": {"container_id": "ab" * 32, "node": "n1", "path": "/tmp/x\u0000"},
    },
    {
        "action": "quarantine_file",
        "target": {"container_id": "ab" * 32, "node": "n1", "path": "/tmp/./x"},
    },
    {"action": "kill_process", "target": {"container_id": "ab" * 32, "node": "n1", "pid": 1}},
    {"action": "kill_process", "target": {"container_id": "not-hex", "node": "n1", "pid": 4242}},
    {"action": "isolate_pod", "target": {"namespace": "Kube-System", "pod": "x"}},
    {"action": "isolate_pod", "target": {"namespace": "kube-system ", "pod": "x"}},
    {"action": "isolate_pod", "target": {"namespace": "payments", "pod": "../x"}},
    {
        "action": "label_pod",
        "target": ISOLATE["target"],
        "parameters": {"labels": {"qcdr.qualys.com/quarantine": "x"}},
    },
    {"action": "label_pod", "target": ISOLATE["target"], "parameters": {"labels": {"app": "a\nb"}}},
    {"action": "isolate_pod", "target": ISOLATE["target"], "lease": "400d"},
    {"action": "label_pod", "target": ISOLATE["target"], "lease": "1h"},
    # integers past 64 bits (valid JSON): the action row's JSONB encoder refused them, an HTTP 500
    {
        "action": "label_pod",
        "target": {"namespace": "payments", "pod": "api-1", "pid_start_ticks": 2**64},
        "parameters": {"labels": {"a": "b"}},
    },
    {
        "action": "label_pod",
        "target": {"namespace": "payments", "pod": "api-1", "pid": 2**64},
        "parameters": {"labels": {"a": "b"}},
    },
    {
        "action": "quarantine_file",
        "target": {"container_id": "ab" * 32, "node": "n1", "path": "/tmp/x"},
        "parameters": {"max_bytes": 2**64},
    },
    {
        "action": "capture_forensics",
        "target": {"container_id": "ab" * 32, "node": "n1"},
        "parameters": {"max_file_bytes": 2**64},
    },
]


async def test_malformed_targets_are_refused_before_anything_is_stored(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with running_service(
        committed_db, redis_url, redis_prefix, tmp_path, actions_mode="enforce"
    ) as service:
        for body in MALFORMED:
            r = await service.post("/v1/actions", body)
            assert r.status_code == 422, (body, r.text)
        assert (await service.get("/v1/actions")).json()["items"] == []
        assert mutations(service) == []


async def test_read_tokens_cannot_act(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with running_service(
        committed_db, redis_url, redis_prefix, tmp_path, actions_mode="enforce"
    ) as service:
        pending = await service.post("/v1/actions", {**ISOLATE, "require_approval": True})
        action_id = pending.json()["id"]
        for path in ("/v1/actions", f"/v1/actions/{action_id}/approve", f"/v1/actions/{action_id}/undo"):
            r = await service.post(path, ISOLATE if path == "/v1/actions" else None, token=READ)
            assert r.status_code == 403, (path, r.text)
        assert (await service.action(action_id))["state"] == "pending"
        assert mutations(service) == []
