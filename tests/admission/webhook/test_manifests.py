"""k8s/admission: both variants render with kubectl kustomize, every built-in object is valid
(strict) for Kubernetes 1.30 and later, the registration is fail-open, fast and scoped as
documented, and the TLS-serving Deployment still meets the restricted standard (checked with our
own engine)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from qcdr_admission import pss
from qcdr_admission.webhook.review import TEMPLATE_KINDS

ROOT = Path(__file__).resolve().parents[3]
KUBECTL = Path(sys.executable).parent / "kubectl"
VARIANTS = ["admission", "admission/with-cert-manager"]
CERT_MANAGER_KINDS = {"Issuer", "Certificate"}


@cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def one(kustomization: str, kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in render(kustomization) if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_valid_for_kubernetes_1_30_and_later(variant: str) -> None:
    versions = [
        v for v in kubernetes_validate.utils.all_versions() if tuple(map(int, v.split(".")))[:2] >= (1, 30)
    ]
    assert versions
    errors = []
    for obj in render(variant):
        if obj["kind"] in CERT_MANAGER_KINDS:
            assert obj["apiVersion"] == "cert-manager.io/v1"
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {exc.message}")
    assert errors == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_registration_is_fail_open_fast_and_scoped(variant: str) -> None:
    vwc = one(variant, "ValidatingWebhookConfiguration", "qcdr-admission")
    (hook,) = vwc["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] <= 3
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"] == {
        "name": "qcdr-admission-webhook",
        "namespace": "qualys-system",
        "path": "/validate",
        "port": 443,
    }
    resources = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    plural = {
        "Deployment": ("apps", "deployments"),
        "StatefulSet": ("apps", "statefulsets"),
        "DaemonSet": ("apps", "daemonsets"),
        "ReplicaSet": ("apps", "replicasets"),
        "ReplicationController": ("", "replicationcontrollers"),
        "Job": ("batch", "jobs"),
        "CronJob": ("batch", "cronjobs"),
    }
    assert set(plural) == TEMPLATE_KINDS
    assert resources == {("", "pods"), ("", "pods/ephemeralcontainers"), *plural.values()}
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in hook["rules"])
    (by_name, exempt) = hook["namespaceSelector"]["matchExpressions"]
    assert by_name == {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", "qualys-system", "qualys-node-agent"],
    }
    assert exempt == {"key": "qcdr.qualys.com/admission-exempt", "operator": "NotIn", "values": ["true"]}
    conditions = {c["name"]: c["expression"] for c in hook["matchConditions"]}
    assert "system:serviceaccount:qualys-system:" in conditions["not-the-suites-service-accounts"]
    assert "qcdr.qualys.com/admission-exempt" in conditions["not-labelled-exempt"]


def test_the_node_agent_namespace_carries_the_exempt_label() -> None:
    namespace = yaml.safe_load((ROOT / "k8s/node-agent/namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["qcdr.qualys.com/admission-exempt"] == "true"


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_serves_tls_from_the_secret(variant: str) -> None:
    deployment = one(variant, "Deployment", "qcdr-admission")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QCDR_ADMISSION_TLS_CERT"] == "/etc/qcdr/tls/tls.crt"
    assert env["QCDR_ADMISSION_TLS_KEY"] == "/etc/qcdr/tls/tls.key"
    assert env["QCDR_ADMISSION_TLS_REQUIRED"] == "true"
    assert "DATABASE_URL" in env  # the base's variables are kept
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/qcdr/tls", "readOnly": True}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "qcdr-admission-tls"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["httpGet"]["port"] == "http"
    service = one(variant, "Service", "qcdr-admission-webhook")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "http", "protocol": "TCP"}
    ]
    metadata, pod = pss.pod_spec_of(deployment) or ({}, {})
    assert pss.evaluate(metadata, pod, "restricted", "latest") == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_console_reaches_admission_over_https_with_the_webhook_ca(variant: str) -> None:
    """Admission answers HTTPS only once registered; the console kept http://qcdr-admission:8000
    and every admission page failed."""
    (container,) = one(variant, "Deployment", "qcdr-federation")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = one(variant, "Service", "qcdr-admission-webhook")["metadata"]
    # the serving certificate's name (cert-manager's dnsNames, `qcdr-admission certs`' default)
    assert env["QCDR_CONSOLE_ADMISSION_URL"] == f"https://{service['name']}.{service['namespace']}.svc"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    ca_dir, _, ca_name = env["QCDR_CONSOLE_ADMISSION_CA_FILE"].rpartition("/")
    volumes = {
        v["name"]: v
        for v in one(variant, "Deployment", "qcdr-federation")["spec"]["template"]["spec"]["volumes"]
    }
    secret = volumes[mounts[ca_dir]]["secret"]
    # only the CA from the admission Secret: never its private key
    assert secret == {"secretName": "qcdr-admission-tls", "items": [{"key": "ca.crt", "path": ca_name}]}


def test_cert_manager_variant() -> None:
    vwc = one("admission/with-cert-manager", "ValidatingWebhookConfiguration", "qcdr-admission")
    assert vwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "qualys-system/qcdr-admission-tls"
    }
    cert = one("admission/with-cert-manager", "Certificate", "qcdr-admission-tls")
    assert cert["metadata"]["namespace"] == "qualys-system"
    assert cert["spec"]["secretName"] == "qcdr-admission-tls"
    assert "qcdr-admission-webhook.qualys-system.svc" in cert["spec"]["dnsNames"]
    assert (
        cert["spec"]["issuerRef"]["name"]
        == one("admission/with-cert-manager", "Issuer", "qcdr-admission-selfsigned")["metadata"]["name"]
    )
    plain = one("admission", "ValidatingWebhookConfiguration", "qcdr-admission")
    assert "annotations" not in plain["metadata"]


def test_the_dev_certificate_names_the_webhook_service() -> None:
    from qcdr_admission.certs import DEFAULT_DNS

    assert DEFAULT_DNS == ("qcdr-admission-webhook.qualys-system.svc",)
