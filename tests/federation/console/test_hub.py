"""The console on a hub: the cluster health matrix with federated policy placement, and spoke
actions (from heartbeats) approved or rejected as hub commands for the spoke."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from qcdr_common.contracts.federation.v1 import ClusterHeartbeat
from qcdr_federation.hub.commands.models import CommandRow
from sqlalchemy import select

from tests.federation.conftest import READ, WRITE_HEADERS, client_for, declare_cluster, register_spoke
from tests.federation.console.conftest import BASE, attach_fakes, browser, post, sign_in
from tests.federation.console.fakes import FakeData


def policy_body() -> dict[str, Any]:
    return {
        "name": "no-ptrace",
        "template": {
            "apiVersion": "cilium.io/v1alpha1",
            "kind": "TracingPolicyNamespaced",
            "metadata": {"name": "block-ptrace", "namespace": "web"},
            "spec": {"kprobes": [{"call": "sys_ptrace", "syscall": True}]},
        },
        "placement": {"clusters": ["eu-1"]},
    }


@pytest.fixture
async def hub_console(
    hub_app: FastAPI, fake: FakeData
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    await attach_fakes(hub_app, hub_app.state.console.settings, fake)
    async with client_for(hub_app) as api, browser(hub_app) as ui:
        yield api, ui


async def _spoke_with_actions(api: httpx.AsyncClient) -> None:
    spoke = await register_spoke(api, "eu-1", {"env": "prod"})
    heartbeat = ClusterHeartbeat(
        sent_at=datetime.now(UTC),
        version="1.4.2",
        kubernetes_version="v1.31.2",
        node_count=3,
        actions=[
            {"action_id": "42", "action": "isolate_pod", "state": "pending", "target": {"pod": "web-7"}},
            {"action_id": "43", "action": "kill_process", "state": "succeeded", "target": {"pod": "web-8"}},
        ],
    ).model_dump(mode="json")
    assert (
        await api.post("/federation/v1/heartbeat", json=heartbeat, headers=spoke.headers)
    ).status_code == 200


async def test_clusters_health_and_policy_matrix(
    hub_console: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    api, ui = hub_console
    await _spoke_with_actions(api)
    await declare_cluster(api, "us-2")
    assert (
        await api.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    ).status_code == 201
    await sign_in(ui)
    html = (await ui.get("/ui/clusters")).text
    assert '<b id="cluster-count">2</b>' in html
    assert '<b id="policy-count">1</b>' in html
    assert '<td class="health-healthy">healthy</td>' in html
    assert '<td class="health-pending">pending</td>' in html
    assert "v1.31.2" in html
    assert "1.4.2" in html
    assert "no-ptrace" in html
    # eu-1 has the policy placed (not yet reported), us-2 does not
    assert html.count("not placed") == 1


async def test_a_federated_policy_suspended_and_resumed_from_the_clusters_page(
    hub_console: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    api, ui = hub_console
    await declare_cluster(api, "eu-1")
    created = await api.post("/v1/federated-policies", json=policy_body(), headers=WRITE_HEADERS)
    policy_id = created.json()["id"]
    csrf = await sign_in(ui)
    html = (await ui.get("/ui/clusters")).text
    assert 'id="rollout-no-ptrace"' not in html  # every cluster at once: no rollout to show
    assert f'action="/ui/federated-policies/{policy_id}/suspend"' in html

    done = await post(ui, f"/ui/federated-policies/{policy_id}/suspend", csrf)
    assert done.status_code == 303
    policy = (await api.get(f"/v1/federated-policies/{policy_id}", headers=WRITE_HEADERS)).json()
    assert policy["suspended"] is True
    assert policy["suspended_by"].startswith("via console by ")
    html = (await ui.get("/ui/clusters")).text
    assert '<span class="rollout rollout-suspended" id="rollout-no-ptrace">suspended</span>' in html
    assert f'action="/ui/federated-policies/{policy_id}/resume"' in html

    assert (await post(ui, f"/ui/federated-policies/{policy_id}/resume", csrf)).status_code == 303
    policy = (await api.get(f"/v1/federated-policies/{policy_id}", headers=WRITE_HEADERS)).json()
    assert policy["suspended"] is False

    # refused: an unknown policy, an unknown verb, no CSRF token, a read-only session
    missing = "fp-00000000-0000-0000-0000-000000000000"
    assert (await post(ui, f"/ui/federated-policies/{missing}/suspend", csrf)).status_code == 404
    assert (await post(ui, f"/ui/federated-policies/{policy_id}/delete", csrf)).status_code == 404
    no_token = await ui.post(f"/ui/federated-policies/{policy_id}/suspend", headers={"Origin": BASE})
    assert no_token.status_code == 403
    reader_csrf = await sign_in(ui, READ)
    assert (await post(ui, f"/ui/federated-policies/{policy_id}/suspend", reader_csrf)).status_code == 403


async def test_findings_forwarded_by_spokes_on_the_clusters_page(
    hub_console: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    api, ui = hub_console
    eu = await register_spoke(api, "eu-1")
    us = await register_spoke(api, "us-2")
    for spoke, title, second in ((eu, "Reverse shell in shop/cart", 1), (us, "Miner pulled in ci/runner", 2)):
        item = {
            "id": f"fnd-{spoke.name}",
            "kind": "chain",
            "detector": "correlation",
            "category": "chain.reverse_shell",
            "severity": "critical",
            "title": title,
            "event_time": datetime(2026, 12, 1, 12, 0, second, tzinfo=UTC).isoformat(),
            "workload": {"namespace": "shop", "pod": "cart-1"},
        }
        ack = await api.post(
            "/federation/v1/forward", json={"kind": "findings", "items": [item]}, headers=spoke.headers
        )
        assert ack.json()["accepted"] == 1
    await sign_in(ui)
    html = (await ui.get("/ui/clusters")).text
    section = html[html.index('id="spoke-findings"') :]
    # newest first, each with its spoke
    assert section.index("Miner pulled in ci/runner") < section.index("Reverse shell in shop/cart")
    assert 'href="/ui/clusters?cluster=us-2#spoke-findings">us-2</a>' in section
    one = (await ui.get("/ui/clusters", params={"cluster": "eu-1"})).text
    one_section = one[one.index('id="spoke-findings"') :]
    assert "Reverse shell in shop/cart" in one_section
    assert "Miner pulled" not in one_section
    assert (await ui.get("/ui/clusters", params={"cluster": "<script>"})).status_code == 400


async def test_spoke_actions_are_queued_as_commands(
    hub_console: tuple[httpx.AsyncClient, httpx.AsyncClient], hub_app: FastAPI
) -> None:
    api, ui = hub_console
    await _spoke_with_actions(api)
    csrf = await sign_in(ui)
    page = (await ui.get("/ui/actions")).text
    assert "eu-1" in page
    assert "web-7" in page
    assert "web-8" in page
    assert 'action="/ui/clusters/eu-1/actions/42/approve"' in page
    assert 'action="/ui/clusters/eu-1/actions/43/approve"' not in page  # not pending
    done = await post(ui, "/ui/clusters/eu-1/actions/42/approve", csrf, reason="seen it")
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/actions?done=queued&id=42"
    async with hub_app.state.sessions() as session:
        rows = (await session.scalars(select(CommandRow))).all()
    assert [(r.kind, r.action_id, r.requested_by, r.reason) for r in rows] == [
        ("approve", "42", "qcdr-api-token", "via console by qcdr-api-token: seen it")
    ]
    assert (await post(ui, "/ui/clusters/nowhere/actions/42/approve", csrf)).status_code == 404
    # the whole name and id must match ("$" in a re.match pattern also matches before a final "\n")
    for path in ("/ui/clusters/eu-1%0A/actions/42/approve", "/ui/clusters/eu-1/actions/42%0A/approve"):
        assert (await post(ui, path, csrf, reason="x")).status_code == 404, path
    async with hub_app.state.sessions() as session:
        assert len((await session.scalars(select(CommandRow))).all()) == 1  # nothing more queued
    assert (await post(ui, "/ui/clusters/eu-1/actions/42/undo", csrf)).status_code == 404


async def test_read_only_on_the_hub(hub_console: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    api, ui = hub_console
    await _spoke_with_actions(api)
    csrf = await sign_in(ui, READ)
    page = (await ui.get("/ui/actions")).text
    assert "web-7" in page
    assert "/ui/clusters/eu-1/actions/42/approve" not in page
    assert (await post(ui, "/ui/clusters/eu-1/actions/42/approve", csrf, reason="x")).status_code == 403
