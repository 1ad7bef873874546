"""Runtime awareness from a real Redis stream: bootstrap with XRANGE, follow with XREAD (no group),
windows and severities, and the runtime_aware check answered from memory."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_admission.policies.evaluate import PolicyEngine
from qcdr_admission.policies.model import AdmissionPolicy
from qcdr_admission.runtime.reader import FindingsReader
from qcdr_admission.runtime.state import RuntimeState
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import new_envelope
from qcdr_common.streams.names import stream_key
from redis.asyncio import Redis

from tests.admission.policies.factories import container, pod_subject

pytestmark = [pytest.mark.redis]
NOW = datetime.now(UTC)
DIGEST = "sha256:" + "c" * 64


def finding(n: int, **over: Any) -> Finding:
    data: dict[str, Any] = {
        "id": f"f{n}",
        "kind": "source",
        "detector": "falco",
        "category": "Shell",
        "severity": "high",
        "event_time": NOW,
        "workload": {"namespace": "payments", "image": "r.io/api:1"},
    }
    data.update(over)
    return Finding.model_validate(data)


async def publish(redis: Redis, prefix: str, *findings: Finding) -> None:
    for f in findings:
        envelope = new_envelope(
            "analysis.finding_raised", f, source="analysis", cluster_id="t", occurred_at=f.event_time
        )
        await redis.xadd(stream_key(prefix, "analysis:findings"), envelope.to_fields())  # type: ignore[arg-type]


async def test_bootstrap_then_follow(redis_client: Redis, redis_prefix: str) -> None:
    await publish(
        redis_client,
        redis_prefix,
        finding(1),
        finding(2, severity="low"),  # below the minimum severity
        finding(3, event_time=NOW - timedelta(days=3)),  # past the window
        finding(4, kind="chain", severity="critical", workload={"namespace": "ops", "image_digest": DIGEST}),
    )
    await redis_client.xadd(stream_key(redis_prefix, "analysis:findings"), {"type": "x", "data": "not json"})
    state = RuntimeState(window_s=86400)
    reader = FindingsReader(redis_client, state, prefix=redis_prefix, batch=2, block_ms=50)
    await reader.bootstrap()
    assert (state.ready, reader.read, reader.malformed) == (True, 5, 1)
    assert [i.id for i in state.for_image("r.io/api:1")] == ["f1"]
    assert [i.id for i in state.for_namespace("payments")] == ["f1"]
    assert [i.id for i in state.for_image(f"r.io/other@{DIGEST}")] == ["f4"]
    assert state.for_image("r.io/api:2") == []

    task = asyncio.create_task(reader.run())
    try:
        await publish(
            redis_client, redis_prefix, finding(5, workload={"namespace": "payments", "image": "r.io/new:1"})
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if state.for_image("r.io/new:1"):
                break
            await asyncio.sleep(0.02)
        assert [i.id for i in state.for_image("r.io/new:1")] == ["f5"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    policy = AdmissionPolicy(name="rt", checks={"runtime_aware": True})
    engine = PolicyEngine([policy], runtime=state)
    results = engine.evaluate(pod_subject({"containers": [container(image="r.io/api:1")]}, namespace="ops"))
    assert sorted(r.message.split(":")[0] for r in results) == [
        'container "app"',
        "namespace 'ops' has open findings",
    ]


def test_expiry_and_replacement() -> None:
    clock = [NOW.timestamp()]
    state = RuntimeState(window_s=60, clock=lambda: clock[0])
    state.add(finding(1))
    state.add(finding(1, workload={"namespace": "other"}))  # same id: replaced, not duplicated
    assert state.for_namespace("payments") == []
    assert len(state.for_namespace("other")) == 1
    clock[0] += 61
    assert state.for_namespace("other") == []  # expired on read already
    assert state.expire() == 1
    assert len(state) == 0
