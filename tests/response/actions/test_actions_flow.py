"""Response actions end to end through the response service (its API, worker, executor and lease
loop) with the real PostgreSQL and Redis and the shared Kubernetes API test server: a finding
starts a playbook, a step waits for approval, is executed, its containment lease ends and it is
undone automatically; every step is in the audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from qcdr_common.streams.names import stream_key
from qcdr_common.streams.producer import publish
from redis.asyncio import Redis

from tests.response.actions.service_helpers import READ, Service, eventually, running_service
from tests.response.service.conftest import finding_envelope, make_finding

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

PLAYBOOK = """
playbooks:
  - name: block-miner
    match:
      categories: [Crypto_Mining]
      min_severity: high
    actions:
      - action: block_binary
        require_approval: true
        lease: 2s
"""


@pytest.fixture
async def service(
    committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Service]:
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "miner.yaml").write_text(PLAYBOOK)
    async with running_service(
        committed_db,
        redis_url,
        redis_prefix,
        tmp_path,
        actions_mode="enforce",
        playbooks_dir=books,
        extra_protected_namespaces=("restricted-*",),
    ) as svc:
        yield svc


async def test_playbook_approval_execution_lease_expiry_and_automatic_undo(
    service: Service, redis_client: Redis, redis_prefix: str
) -> None:
    taken_before = REGISTRY.get_sample_value("qualys_response_actions_total", {"action": "block_binary"})
    finding = make_finding(
        category="Crypto_Mining",
        severity="critical",
        techniques=["T1496"],
        process={"name": "xmrig", "path": "/tmp/xmrig", "pid": 4242},
    )
    envelope = finding_envelope(finding)
    key = stream_key(redis_prefix, "analysis:findings")
    await publish(redis_client, key, [envelope], maxlen=1000)

    async def started() -> bool:
        r = await service.get("/v1/actions", finding_id=finding.id)
        return bool(r.json()["items"])

    await eventually(started)
    [row] = (await service.get("/v1/actions", finding_id=finding.id)).json()["items"]
    assert row["state"] == "pending"
    assert row["playbook"] == "block-miner"
    assert row["dry_run"] is False
    assert row["target"]["binary"] == "/tmp/xmrig"
    assert row["target"]["namespace"] == "payments"
    assert service.policies() == {}  # nothing happens before approval

    # a redelivered finding never starts the playbook twice
    await publish(redis_client, key, [envelope], maxlen=1000)
    approved = await service.post(f"/v1/actions/{row['id']}/approve", {"note": "confirmed miner"})
    assert approved.status_code == 200, approved.text

    done = await service.until_state(row["id"], "succeeded")
    assert done["lease_expires_at"] is not None
    assert done["undo"]["namespace"] == "payments"
    [(ns, name)] = list(service.policies())
    assert ns == "payments"
    assert name == done["undo"]["name"]
    policy = service.policies()[(ns, name)]
    # the pod's workload labels, without the per-revision hash
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "api"}}
    assert policy["spec"]["kprobes"][0]["selectors"][0]["matchActions"] == [{"action": "Sigkill"}]

    released = await service.until_state(row["id"], "released", within_s=15)
    assert released["released_at"] is not None
    assert service.policies() == {}
    events = [(a["actor"], a["event"]) for a in released["audit"]]
    assert events == [
        ("playbook:block-miner", "requested"),
        ("playbook:block-miner", "awaiting_approval"),
        ("qcdr-api-token", "approved"),
        ("qcdr-api-token", "queued"),
        ("response", "intent"),
        ("response", "result"),
        ("lease-expiry", "undo_requested"),
        ("response", "intent"),
        ("response", "undo_result"),
    ]
    assert all(a["finding_id"] == finding.id for a in released["audit"])
    listed = await service.get("/v1/actions", finding_id=finding.id)
    assert len(listed.json()["items"]) == 1
    metrics = (await service.client.get("/metrics")).text
    assert 'qualys_response_actions_total{action="block_binary"}' in metrics
    assert (
        'qcdr_response_action_outcomes_total{action="block_binary",op="undo",outcome="succeeded"}' in metrics
    )
    # the seed's counter counts actions taken: the undo is in the outcomes counter only
    taken = REGISTRY.get_sample_value("qualys_response_actions_total", {"action": "block_binary"})
    assert taken == (taken_before or 0) + 1


async def test_renew_extends_and_undo_by_hand(service: Service) -> None:
    body = {
        "action": "block_binary",
        "target": {"namespace": "payments", "pod": "api-7d9f-x2", "binary": "/tmp/kinsing"},
        "lease": "1h",
        "reason": "kinsing seen by hand",
    }
    created = await service.post("/v1/actions", body)
    assert created.status_code == 201, created.text
    action_id = created.json()["id"]
    done = await service.until_state(action_id, "succeeded")
    renewed = await service.post(f"/v1/actions/{action_id}/renew", {"lease": "2h"})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["lease_expires_at"] > done["lease_expires_at"]
    # a number goes through the same check as text: a negative one was a silent no-op (200)
    for lease in (-60, -60.0, 0, "-60s"):
        refused = await service.post(f"/v1/actions/{action_id}/renew", {"lease": lease})
        assert refused.status_code == 422, (lease, refused.text)
        assert "duration" in refused.text  # the reason: must be positive, or not a duration
    too_long = await service.post(f"/v1/actions/{action_id}/renew", {"lease": "30d"})
    assert too_long.status_code == 409
    assert too_long.json()["reason"] == "illegal_transition"
    assert len(service.policies()) == 1
    undone = await service.post(f"/v1/actions/{action_id}/undo", {"note": "false positive"})
    assert undone.status_code == 200
    assert undone.json()["state"] == "releasing"
    await service.until_state(action_id, "released")
    assert service.policies() == {}
    again = await service.post(f"/v1/actions/{action_id}/undo")
    assert again.status_code == 409


async def test_reject_protected_and_invalid_requests(service: Service) -> None:
    pending = await service.post(
        "/v1/actions",
        {
            "action": "block_binary",
            "target": {"namespace": "payments", "pod": "api-7d9f-x2", "binary": "/usr/bin/curl"},
            "require_approval": True,
        },
    )
    action_id = pending.json()["id"]
    rejected = await service.post(f"/v1/actions/{action_id}/reject", {"note": "curl is expected here"})
    assert rejected.json()["state"] == "rejected"
    assert rejected.json()["decided_by"] == "qcdr-api-token"
    assert (await service.post(f"/v1/actions/{action_id}/approve")).status_code == 409

    for ns in ("kube-system", "restricted-ops"):
        protected = await service.post(
            "/v1/actions",
            {"action": "block_binary", "target": {"namespace": ns, "pod": "x", "binary": "/bin/sh"}},
        )
        assert protected.status_code == 201
        assert protected.json()["state"] == "skipped", protected.json()
        assert "protected" in protected.json()["message"]
    assert service.policies() == {}
    assert not [r for r in service.k8s.requests if r.method != "GET"]

    bad = [
        {"action": "rm_rf", "target": {}},
        {
            "action": "block_binary",
            "target": {"namespace": "payments", "binary": "/tmp/../etc/x", "pod": "p"},
        },
        {"action": "block_binary", "target": {"namespace": "Payments!", "binary": "/tmp/x", "pod": "p"}},
        {"action": "block_binary", "target": {"namespace": "payments", "pod": "p"}},
        {
            "action": "block_binary",
            "target": {"namespace": "payments", "pod": "p", "binary": "/x"},
            "lease": "x",
        },
        # a lease as a JSON number is checked like the text form: -60 was stored (lease_seconds=-60)
        # and the containment released right after it was applied; 0 silently took the default
        *(
            {
                "action": "block_binary",
                "target": {"namespace": "payments", "pod": "p", "binary": "/x"},
                "lease": lease,
            }
            for lease in (-60, -60.0, 0, True)
        ),
    ]
    for body in bad:
        r = await service.post("/v1/actions", body)
        assert r.status_code == 422, (body, r.text)
    read_only = await service.post("/v1/actions", bad[0], token=READ)
    assert read_only.status_code == 403
