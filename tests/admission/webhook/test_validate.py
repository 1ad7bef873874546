"""``POST /validate`` through the real app: response shapes for deny, warn and audit, skips,
malformed reviews (400 with a reason), and no bearer token on the webhook."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from qcdr_admission.app import create_app
from qcdr_admission.engine import Mode, PssConfig, PssEngine, Result, Subject
from qcdr_admission.webhook.response import MAX_WARNING, MAX_WARNINGS, review_response
from qcdr_common.api.auth import ApiAuthSettings

from tests.admission.webhook.conftest import (
    READ,
    WRITE,
    admission_settings,
    baseline_pod,
    deployment_of,
    privileged_pod,
    restricted_pod,
    review,
)


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/validate", content=body if isinstance(body, bytes) else orjson.dumps(body))


async def test_allowed_pod_echoes_uid(webhook: httpx.AsyncClient) -> None:
    rv = review(restricted_pod())
    r = await post(webhook, rv)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"] == {"uid": rv["request"]["uid"], "allowed": True}


async def test_denied_names_every_enforced_check(webhook: httpx.AsyncClient) -> None:
    pod = privileged_pod()
    pod["spec"]["hostPID"] = True
    pod["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
    r = await post(webhook, review(pod))
    resp = r.json()["response"]
    assert resp["allowed"] is False
    status = resp["status"]
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    for check in ("hostNamespaces", "privileged", "hostPathVolumes"):
        assert check in status["message"]
    assert status["message"].startswith("violates PodSecurity: ")
    # restricted is the warn level: its extra checks come back as warnings, not in the denial
    assert "runAsNonRoot" not in status["message"]
    assert any("runAsNonRoot" in w for w in resp["warnings"])


async def test_warn_mode_allows_with_short_warnings(webhook: httpx.AsyncClient) -> None:
    resp = (await post(webhook, review(baseline_pod()))).json()["response"]
    assert resp["allowed"] is True
    assert "status" not in resp
    warnings = resp["warnings"]
    assert {
        "allowPrivilegeEscalation",
        "capabilities_restricted",
        "runAsNonRoot",
        "seccompProfile_restricted",
    } == {w.split(": ")[1] for w in warnings}
    assert all(len(w) <= MAX_WARNING for w in warnings)


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
async def test_workload_templates_denied_by_default(webhook: httpx.AsyncClient, kind: str) -> None:
    obj = deployment_of(privileged_pod())
    obj["kind"] = kind
    obj["apiVersion"] = "batch/v1" if kind == "Job" else "apps/v1"
    group = "batch" if kind == "Job" else "apps"
    resp = (await post(webhook, review(obj, group=group))).json()["response"]
    assert resp["allowed"] is False
    assert "privileged" in resp["status"]["message"]


async def test_cronjob_and_replication_controller(webhook: httpx.AsyncClient) -> None:
    spec = privileged_pod()["spec"]
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}},
    }
    rc = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "r"},
        "spec": {"template": {"spec": spec}},
    }
    for obj, group in ((cron, "batch"), (rc, "")):
        resp = (await post(webhook, review(obj, group=group))).json()["response"]
        assert resp["allowed"] is False, obj["kind"]


async def test_templates_only_warned_when_configured() -> None:
    engine = PssEngine(PssConfig(deny_templates=False))
    app = create_app(admission_settings(), engine=engine)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://a") as client:
            dep = (await post(client, review(deployment_of(privileged_pod()), group="apps"))).json()[
                "response"
            ]
            pod = (await post(client, review(privileged_pod()))).json()["response"]
    assert dep["allowed"] is True
    assert any("privileged" in w for w in dep["warnings"])
    assert pod["allowed"] is False


async def test_ephemeral_containers_subresource_is_evaluated(webhook: httpx.AsyncClient) -> None:
    old = restricted_pod()
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}
    ]
    rv = review(new, operation="UPDATE", old=old, subresource="ephemeralcontainers")
    resp = (await post(webhook, rv)).json()["response"]
    assert resp["allowed"] is False
    assert 'container "debug"' in resp["status"]["message"]


async def test_metadata_only_update_is_skipped(webhook: httpx.AsyncClient) -> None:
    # a pod that violates baseline, created before enforcement: relabelling it must still work
    old = privileged_pod()
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "x"}
    new["status"] = {"phase": "Running"}
    resp = (await post(webhook, review(new, operation="UPDATE", old=old))).json()["response"]
    assert resp == {"uid": resp["uid"], "allowed": True}
    # a spec change is evaluated
    new["spec"]["containers"][0]["image"] = "nginx:1.28"
    resp = (await post(webhook, review(new, operation="UPDATE", old=old))).json()["response"]
    assert resp["allowed"] is False


async def test_seccomp_annotation_change_is_significant(webhook: httpx.AsyncClient) -> None:
    old = baseline_pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"] = {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
    resp = (await post(webhook, review(new, operation="UPDATE", old=old))).json()["response"]
    assert resp["allowed"] is False
    assert "appArmorProfile" in resp["status"]["message"]


@pytest.mark.parametrize(
    ("rv_change", "why"),
    [
        ({"operation": "DELETE"}, "operation"),
        ({"operation": "CONNECT"}, "operation"),
        ({"subResource": "status"}, "subresource"),
        ({"kind": {"group": "", "version": "v1", "kind": "ConfigMap"}}, "kind"),
        ({"kind": {"group": "example.com", "version": "v1", "kind": "Pod"}}, "kind"),
    ],
)
async def test_not_evaluated_is_allowed(
    webhook: httpx.AsyncClient, rv_change: dict[str, Any], why: str
) -> None:
    rv = review(privileged_pod())
    rv["request"].update(rv_change)
    r = await post(webhook, rv)
    assert r.status_code == 200, why
    assert r.json()["response"]["allowed"] is True


async def test_object_without_kind_takes_the_requests(webhook: httpx.AsyncClient) -> None:
    pod = privileged_pod()
    del pod["kind"], pod["apiVersion"]
    rv = review(pod, kind="Pod")
    assert (await post(webhook, rv)).json()["response"]["allowed"] is False


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"", "invalid_json"),
        ([], "malformed_review"),
        (
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
            "unsupported_review",
        ),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "malformed_review"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
            "malformed_review",
        ),
    ],
)
async def test_malformed_review_is_400(webhook: httpx.AsyncClient, body: Any, reason: str) -> None:
    r = await post(webhook, body)
    assert r.status_code == 400
    assert r.json()["reason"] == reason


async def test_malformed_object_is_400_with_the_path(webhook: httpx.AsyncClient) -> None:
    rv = review(deployment_of(restricted_pod()), group="apps")
    rv["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = (
        "yes"
    )
    r = await post(webhook, rv)
    assert r.status_code == 400
    assert r.json()["reason"] == "malformed_object"
    assert "spec.template.spec.containers[0].securityContext.privileged" in r.json()["detail"]
    rv = review(restricted_pod())
    rv["request"]["object"] = "a string"
    assert (await post(webhook, rv)).json()["reason"] == "malformed_object"


async def test_webhook_needs_no_token_but_the_api_does(webhook: httpx.AsyncClient) -> None:
    assert (await post(webhook, review(restricted_pod()))).status_code == 200
    assert (await webhook.get("/v1/admission/decisions")).status_code == 401
    assert (await webhook.get("/validate")).status_code in (401, 405)


async def test_metrics_count_reviews(webhook: httpx.AsyncClient) -> None:
    def value(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    before = (await webhook.get("/metrics")).text
    await post(webhook, review(privileged_pod()))
    await post(webhook, review(restricted_pod()))
    after = (await webhook.get("/metrics")).text
    for name, delta in (
        ("qualys_admission_total", 2),
        ("qualys_admission_allowed_total", 1),
        ("qualys_admission_denied_total", 1),
    ):
        assert value(after, name) - value(before, name) == delta, name
    assert "qcdr_admission_review_seconds_bucket" in after


def test_audit_results_become_annotations_and_warnings_are_capped() -> None:
    results = [Result("policy:default-security", "requireDigest", "image x has no digest", Mode.AUDIT)]
    results += [Result("pss", f"check{i}", "m" * 400, Mode.WARN) for i in range(MAX_WARNINGS + 5)]
    allowed, body = review_response("u1", results)
    resp = orjson.loads(body)["response"]
    assert allowed
    assert resp["allowed"] is True
    assert resp["auditAnnotations"] == {"policy.default-security": "requireDigest: image x has no digest"}
    assert len(resp["warnings"]) == MAX_WARNINGS
    assert all(len(w) <= MAX_WARNING for w in resp["warnings"])
    assert "more warnings" in resp["warnings"][-1]


async def test_policy_results_in_the_denial_message() -> None:
    class Fixed:
        def evaluate(self, subject: Subject) -> list[Result]:
            return [
                Result("pss", "privileged", "container must not be privileged", Mode.ENFORCE),
                Result(
                    "policy:registries", "allowedRegistries", "image docker.io/x is not allowed", Mode.ENFORCE
                ),
            ]

    app = create_app(
        admission_settings(),
        engine=Fixed(),
        auth=ApiAuthSettings(token=SecretStr(WRITE), token_read=SecretStr(READ)),
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://a") as client:
            resp = (await post(client, review(restricted_pod()))).json()["response"]
    assert resp["status"]["message"] == (
        "violates PodSecurity: privileged (container must not be privileged); "
        'violates policy "registries": allowedRegistries (image docker.io/x is not allowed)'
    )
