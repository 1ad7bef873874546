"""Issue #10 acceptance on 127.0.0.1: a hub and three spokes as separate processes, each stack with
its own PostgreSQL database and its own key prefix on one real Redis.

- hub: ``qcdr-federation`` (role hub) and ``qcdr-analysis`` (correlates what spokes forward);
- spoke-eu and spoke-us (labels env=prod): ingest, analysis, response, federation (role spoke);
- spoke-dev (env=dev): response and federation.

What is checked, in order (one module: the stacks start once): registration; a policy created on
the hub reaches exactly the placed spokes' response services and their apply status returns to
the hub; the same attack pattern split across two spokes becomes exactly one chain at the hub; a
baseline learned on one spoke makes the same image start warm on another; a killed spoke is
marked offline within the threshold and catches up after restart; a wrong or revoked credential
gets 401 and is logged.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from qcdr_common.testing.plugin import scratch_database
from qcdr_common.testing.wait import eventually

from tests.integration.stack import Proc, Stack

TOKEN = "fed-it-" + secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HEARTBEAT_S = 1.0
DEGRADED_S = 3.0
OFFLINE_S = 5.0
ATTACKED_IMAGE = "sha256:" + "a1" * 32
SHARED_IMAGE = "sha256:" + "b2" * 32

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@dataclass
class Spoke:
    name: str
    labels: dict[str, str]
    stack: Stack
    prefix: str
    services: tuple[str, ...]
    procs: dict[str, Proc] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return self.procs[service].url


@dataclass
class Federation:
    hub: Stack
    hub_prefix: str
    hub_procs: dict[str, Proc]
    spokes: dict[str, Spoke]
    redis: redis.Redis

    @property
    def hub_url(self) -> str:
        return self.hub_procs["federation"].url

    def hub_get(self, path: str, service: str = "federation", **params: Any) -> Any:
        url = self.hub_procs[service].url
        r = httpx.get(f"{url}{path}", headers=AUTH, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def clusters(self) -> dict[str, dict[str, Any]]:
        body = self.hub_get("/v1/clusters")
        items = body["items"] if isinstance(body, dict) else body
        return {c["name"]: c for c in items}


def _settings_env(prefix: str, cluster: str) -> dict[str, str]:
    return {
        "QCDR_CLUSTER_ID": cluster,
        "QCDR_STREAM_BLOCK_MS": "100",
        "QCDR_OUTBOX_POLL_S": "0.05",
        "QCDR_REDIS_PREFIX": prefix,
    }


@pytest.fixture(scope="module")
def federation(
    base_database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    work = tmp_path_factory.mktemp("federation")
    run = uuid.uuid4().hex[:6]
    client = redis.Redis.from_url(redis_url)
    stacks: list[Stack] = []
    with (
        scratch_database(base_database_url, "qcdr_fed_hub") as hub_db,
        scratch_database(base_database_url, "qcdr_fed_eu") as eu_db,
        scratch_database(base_database_url, "qcdr_fed_us") as us_db,
        scratch_database(base_database_url, "qcdr_fed_dev") as dev_db,
    ):
        try:
            hub_prefix = f"fedit-{run}-hub"
            hub_dir = work / "hub"
            hub_dir.mkdir()
            hub = Stack.create(
                hub_dir,
                database_url=hub_db,
                redis_url=redis_url,
                prefix=hub_prefix,
                token=TOKEN,
                extra_env={
                    **_settings_env(hub_prefix, "hub"),
                    "FEDERATION_ROLE": "hub",
                    "QCDR_FEDERATION_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
                    "QCDR_FEDERATION_DEGRADED_AFTER_S": str(DEGRADED_S),
                    "QCDR_FEDERATION_OFFLINE_AFTER_S": str(OFFLINE_S),
                    "QCDR_FEDERATION_HEALTH_SWEEP_S": "0.5",
                    "QCDR_FEDERATION_LONG_POLL_MAX_S": "5",
                    "QCDR_CORRELATION_IDLE_FLUSH_S": "1",
                },
            )
            stacks.append(hub)
            # analysis reads ingest's views (intel), so the hub database has ingest's tables too
            hub.migrate("ingest", "analysis", "federation")
            hub_procs = {"federation": hub.start("federation"), "analysis": hub.start("analysis")}
            hub_procs["federation"].wait_ready()
            fed = Federation(hub, hub_prefix, hub_procs, {}, client)

            tokens: dict[str, Path] = {}
            plan = [
                ("spoke-eu", {"env": "prod", "region": "eu"}, eu_db, ("ingest", "analysis", "response")),
                ("spoke-us", {"env": "prod", "region": "us"}, us_db, ("ingest", "analysis", "response")),
                ("spoke-dev", {"env": "dev"}, dev_db, ("response",)),
            ]
            for name, labels, db, services in plan:
                r = httpx.post(
                    f"{fed.hub_url}/v1/clusters", json={"name": name, "labels": labels}, headers=AUTH
                )
                assert r.status_code == 201, r.text
                r = httpx.post(f"{fed.hub_url}/v1/clusters/{name}/bootstrap-tokens", json={}, headers=AUTH)
                assert r.status_code == 201, r.text
                token_file = work / f"{name}.token"
                token_file.write_text(r.json()["token"])
                prefix = f"fedit-{run}-{name}"
                spoke_dir = work / name
                spoke_dir.mkdir()
                stack = Stack.create(
                    spoke_dir,
                    database_url=db,
                    redis_url=redis_url,
                    prefix=prefix,
                    token=TOKEN,
                    extra_env={
                        **_settings_env(prefix, name),
                        # a profile learns for one minute of event time here (48 h by default)
                        "QCDR_DETECTORS__BEHAVIOUR_PROFILE__LEARNING_PERIOD": "PT60S",
                        "QCDR_DETECTORS__BEHAVIOUR_PROFILE__COUNT_FLUSH_INTERVAL": "PT1S",
                    },
                )
                stacks.append(stack)
                fed.spokes[name] = Spoke(name, labels, stack, prefix, services)
                tokens[name] = token_file
            # the spokes' processes start together: each spends seconds importing before it
            # listens, and one after another that was most of this fixture
            for spoke in fed.spokes.values():
                spoke.stack.migrate("ingest", "analysis", "response", "federation")
            for name, spoke in fed.spokes.items():
                stack = spoke.stack
                for service in spoke.services:
                    spoke.procs[service] = stack.start(service)
                spoke.procs["federation"] = stack.start(
                    "federation",
                    FEDERATION_ROLE="spoke",
                    FEDERATION_HUB_URL=fed.hub_url,
                    QCDR_FEDERATION_CLUSTER_NAME=name,
                    QCDR_FEDERATION_BOOTSTRAP_TOKEN_FILE=str(tokens[name]),
                    QCDR_FEDERATION_RESPONSE_URL=spoke.url("response"),
                    QCDR_FEDERATION_RESPONSE_TOKEN=TOKEN,
                    QCDR_FEDERATION_RETRY_MAX_S="1",
                    QCDR_FEDERATION_BASELINE_SYNC_S="1",
                    QCDR_FEDERATION_LONG_POLL_MAX_S="5",
                )
            for proc in [hub_procs["analysis"], *(p for s in fed.spokes.values() for p in s.procs.values())]:
                proc.wait_ready()
            yield fed
        finally:
            for stack in reversed(stacks):
                stack.close()  # deletes its Redis keys too
            client.close()


def test_every_spoke_registers_and_is_healthy(federation: Federation) -> None:
    def healthy() -> dict[str, dict[str, Any]] | None:
        seen = federation.clusters()
        ok = all(seen.get(n, {}).get("health") == "healthy" for n in federation.spokes)
        return seen if ok else None

    clusters = eventually(healthy, within=60)
    assert clusters["spoke-eu"]["labels"] == {"env": "prod", "region": "eu"}
    assert clusters["spoke-eu"]["registered_at"] is not None
    for name, spoke in federation.spokes.items():
        info = httpx.get(f"{spoke.url('federation')}/v1/federation/spoke", headers=AUTH, timeout=10).json()
        assert info["registered"] is True, info
        assert info["cluster_name"] == name


def tracing_policy(marker: str) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "fed-block-nc", "annotations": {"qcdr.test/marker": marker}},
        "spec": {
            "kprobes": [
                {
                    "call": "sys_execve",
                    "syscall": True,
                    "args": [{"index": 0, "type": "string"}],
                    "selectors": [
                        {
                            "matchArgs": [{"index": 0, "operator": "Equal", "values": ["/usr/bin/nc"]}],
                            "matchActions": [{"action": "Sigkill"}],
                        }
                    ],
                }
            ]
        },
    }


def spoke_policies(spoke: Spoke) -> list[dict[str, Any]]:
    r = httpx.get(f"{spoke.url('response')}/v1/policies", headers=AUTH, params={"limit": 100}, timeout=10)
    r.raise_for_status()
    return [p for p in r.json()["items"] if p["family"] == "federated"]


def test_a_policy_reaches_exactly_the_placed_spokes_and_their_status_returns(federation: Federation) -> None:
    body = {
        "name": "fed-block-nc",
        "description": "kill netcat in production",
        "template": tracing_policy("v1"),
        "placement": {"cluster_selector": {"match_labels": {"env": "prod"}}},
    }
    r = httpx.post(f"{federation.hub_url}/v1/federated-policies", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 201, r.text
    policy_id = r.json()["id"]

    for name in ("spoke-eu", "spoke-us"):
        (held,) = eventually(lambda n=name: spoke_policies(federation.spokes[n]), within=30)
        assert (held["kind"], held["name"], held["status"]) == ("TracingPolicy", "fed-block-nc", "proposed")
        assert held["federation"]["policy_id"] == policy_id
    assert spoke_policies(federation.spokes["spoke-dev"]) == []

    def reported() -> dict[str, Any] | None:
        status = federation.hub_get(f"/v1/federated-policies/{policy_id}/status")
        cells = {c["cluster"]: c for c in status["clusters"]}
        done = all(
            cells.get(n, {}).get("state") == "proposed" and cells[n]["in_sync"]
            for n in ("spoke-eu", "spoke-us")
        )
        return cells if done else None

    cells = eventually(reported, within=30)
    assert cells.get("spoke-dev", {}).get("placed", False) is False
    matrix = federation.clusters()
    assert matrix["spoke-eu"]["policies"][policy_id]["state"] == "proposed"
    assert policy_id not in matrix["spoke-dev"]["policies"]


def falco_alert(cluster: str, image: str, when: datetime, rule: str, **fields: Any) -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid4()),
        "time": when.isoformat(),
        "rule": rule,
        "priority": fields.pop("priority", "Critical"),
        "output": f"{rule} in {cluster}",
        "hostname": f"{cluster}-node-1",
        "source": "syscall",
        "tags": fields.pop("tags", ["container", "shell", "mitre_execution", "T1059.004"]),
        "output_fields": {
            "k8s.ns.name": "shop",
            "k8s.pod.name": fields.pop("pod", "web-1"),
            "container.id": fields.pop("container_id", secrets.token_hex(6)),
            "container.name": "web",
            "container.image.repository": "registry.example.com/shop/web",
            "container.image.tag": "1.4.2",
            "container.image.digest": image,
            "proc.exepath": fields.pop("exe", "/bin/bash"),
            "proc.name": fields.pop("name", "bash"),
            "proc.pexepath": fields.pop("parent", "/usr/local/bin/node"),
            **fields,
        },
    }


def post_alerts(spoke: Spoke, alerts: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{spoke.url('ingest')}/v1/events/falco", json=alerts, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == len(alerts), r.text


def hub_events(federation: Federation) -> int:
    return int(federation.redis.xlen(f"{federation.hub_prefix}:ingest:events"))


def test_the_same_pattern_split_across_two_spokes_is_one_chain_at_the_hub(federation: Federation) -> None:
    now = datetime.now(UTC)
    before = hub_events(federation)
    post_alerts(
        federation.spokes["spoke-eu"],
        [falco_alert("spoke-eu", ATTACKED_IMAGE, now - timedelta(seconds=20), "Reverse shell")],
    )
    eventually(lambda: hub_events(federation) > before, within=30)
    # forwarded at least once: the second half arrives after the first, as it happened
    post_alerts(
        federation.spokes["spoke-us"],
        [falco_alert("spoke-us", ATTACKED_IMAGE, now - timedelta(seconds=10), "Reverse shell", pod="web-9")],
    )

    def chains() -> list[dict[str, Any]]:
        items = federation.hub_get("/v1/chains", "analysis", limit=100)["items"]
        return [c for c in items if c["pattern"] == "same_image_attacked_in_several_clusters"]

    (chain,) = eventually(chains, within=60)
    assert sorted(chain["clusters"]) == ["spoke-eu", "spoke-us"]
    assert [s.get("cluster") for s in chain["steps"]] == ["spoke-eu", "spoke-us"]
    # the spokes forward with at-least-once delivery: nothing makes it twice
    time.sleep(3)
    assert len(chains()) == 1
    # neither spoke saw both halves, so neither raised it
    for name in ("spoke-eu", "spoke-us"):
        r = httpx.get(f"{federation.spokes[name].url('analysis')}/v1/chains", headers=AUTH, timeout=10)
        assert r.json()["items"] == []


def profile(spoke: Spoke, key: str) -> dict[str, Any] | None:
    r = httpx.get(f"{spoke.url('analysis')}/v1/profiles/{key}", headers=AUTH, timeout=10)
    return r.json() if r.status_code == 200 else None


def test_a_baseline_learned_on_one_spoke_makes_the_image_start_warm_on_another(
    federation: Federation,
) -> None:
    eu, us = federation.spokes["spoke-eu"], federation.spokes["spoke-us"]
    start = datetime.now(UTC) - timedelta(minutes=10)
    learned = [
        falco_alert(
            "spoke-eu",
            SHARED_IMAGE,
            start + timedelta(seconds=s),
            "Launch Package Management Process in Container",
            priority="Notice",
            tags=["process"],
            exe=exe,
            name=exe.rsplit("/", 1)[1],
            parent="/usr/local/bin/python3",
            pod="api-1",
            container_id="c0ffee000001",
        )
        for s, exe in [
            (0, "/usr/bin/curl"),
            (10, "/usr/local/bin/gunicorn"),
            (20, "/usr/bin/curl"),
            (90, "/usr/local/bin/gunicorn"),
        ]
    ]
    post_alerts(eu, learned)
    ready = eventually(lambda: (p := profile(eu, SHARED_IMAGE)) and p["state"] == "ready" and p, within=60)
    assert ready["shared_from"] is None
    # spoke-us never saw the image, yet holds its baseline, ready, from spoke-eu
    shared = eventually(lambda: (p := profile(us, SHARED_IMAGE)) and p["state"] == "ready" and p, within=60)
    assert shared["shared_from"] == "spoke-eu"
    assert shared["shared"]["cluster"] == "spoke-eu"

    # a new workload of the image in spoke-us: known behaviour is quiet, new behaviour is reported
    now = datetime.now(UTC)
    post_alerts(
        us,
        [
            falco_alert(
                "spoke-us",
                SHARED_IMAGE,
                now - timedelta(seconds=5),
                "Known",
                priority="Notice",
                tags=["process"],
                exe="/usr/bin/curl",
                name="curl",
                parent="/usr/local/bin/python3",
                pod="api-us-1",
            ),
            falco_alert(
                "spoke-us",
                SHARED_IMAGE,
                now,
                "Novel",
                priority="Notice",
                tags=["process"],
                exe="/tmp/xmrig",
                name="xmrig",
                parent="/usr/local/bin/python3",
                pod="api-us-1",
            ),
        ],
    )

    def behaviour_findings() -> list[dict[str, Any]]:
        r = httpx.get(f"{us.url('analysis')}/v1/findings", headers=AUTH, params={"limit": 100}, timeout=10)
        return [f for f in r.json()["items"] if f["kind"] in ("anomaly", "drift")]

    found = eventually(behaviour_findings, within=30)
    assert any("/tmp/xmrig" in str(f) for f in found), found
    assert not any(
        "/usr/bin/curl" in str(f.get("attributes", {})) for f in found if "/tmp/xmrig" not in str(f)
    )


def test_a_killed_spoke_goes_offline_and_catches_up_after_restart(federation: Federation) -> None:
    us = federation.spokes["spoke-us"]
    killed_at = time.monotonic()
    us.procs["federation"].kill9()
    eventually(
        lambda: federation.clusters()["spoke-us"]["health"] == "offline", within=OFFLINE_S + 10, every=0.1
    )
    took = time.monotonic() - killed_at
    assert took <= OFFLINE_S + 2 * HEARTBEAT_S + 1.5, f"offline after {took:.1f} s"

    # meanwhile the policy changes; spoke-us is down and catches up when back
    status = federation.hub_get("/v1/federated-policies", limit=100)
    (policy,) = [p for p in status["items"] if p["name"] == "fed-block-nc"]
    body = {
        "name": "fed-block-nc",
        "template": tracing_policy("v2"),
        "placement": {"cluster_selector": {"match_labels": {"env": "prod"}}},
    }
    r = httpx.put(
        f"{federation.hub_url}/v1/federated-policies/{policy['id']}", json=body, headers=AUTH, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.json()["generation"] == 2
    eventually(
        lambda: any(p["current_version"] == 2 for p in spoke_policies(federation.spokes["spoke-eu"])),
        within=30,
    )

    us.procs["federation"].start()
    us.procs["federation"].wait_ready()
    eventually(lambda: federation.clusters()["spoke-us"]["health"] == "healthy", within=30)
    eventually(lambda: any(p["current_version"] == 2 for p in spoke_policies(us)), within=30)

    def caught_up() -> dict[str, dict[str, Any]] | None:
        path = f"/v1/federated-policies/{policy['id']}/status"
        cells = {c["cluster"]: c for c in federation.hub_get(path)["clusters"]}
        both = [cells.get(n, {}) for n in ("spoke-eu", "spoke-us")]
        return cells if all(c.get("generation") == 2 and c.get("in_sync") for c in both) else None

    cells = eventually(caught_up, within=30)
    assert "spoke-dev" not in cells or cells["spoke-dev"]["placed"] is False


def hub_log(federation: Federation) -> str:
    return (federation.hub.workdir / "federation.log").read_text(errors="replace")


def test_a_wrong_or_revoked_credential_gets_401_and_is_logged(federation: Federation) -> None:
    beat = {"sent_at": datetime.now(UTC).isoformat(), "version": "test"}
    wrong = httpx.post(
        f"{federation.hub_url}/federation/v1/heartbeat",
        json=beat,
        headers={"Authorization": "Bearer 0123456789abcdef.not-a-credential-the-hub-issued"},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert eventually(
        lambda: (
            "unknown_credential" in hub_log(federation) and "federation_auth_failed" in hub_log(federation)
        )
    )

    r = httpx.post(f"{federation.hub_url}/v1/clusters/spoke-dev/credentials/revoke", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    eventually(lambda: "revoked_credential" in hub_log(federation), within=20)
    assert "spoke-dev" in hub_log(federation)
    # the spoke itself says so: its next heartbeats are refused
    dev = federation.spokes["spoke-dev"]

    def refused() -> bool:
        info = httpx.get(f"{dev.url('federation')}/v1/federation/spoke", headers=AUTH, timeout=10).json()
        return "401" in str(info) or info.get("registered") is False

    eventually(refused, within=20)
    assert eventually(
        lambda: federation.clusters()["spoke-dev"]["health"] in ("degraded", "offline"), within=OFFLINE_S + 10
    )
