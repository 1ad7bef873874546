"""k8s/node-agent: rendered with kubectl, every object valid (strict) for Kubernetes 1.30 and later,
and the agent deployed as docs/NODE-AGENT.md says: its own privileged namespace, read-only RBAC
on pods, hostPID, the Docker socket, host directories for quarantine and forensics, NODE_NAME
from the downward API, exempt from the admission webhook, and no privilege beyond those."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[4]
KUBECTL = Path(sys.executable).parent / "kubectl"
NAMESPACE = "qualys-node-agent"
EXEMPT = "qcdr.qualys.com/admission-exempt"


@cache
def rendered(variant: str = "node-agent") -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / variant)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered() if o["kind"] == kind}


def test_every_object_is_valid_for_kubernetes_1_30_and_later() -> None:
    versions = [
        v for v in kubernetes_validate.utils.all_versions() if tuple(map(int, v.split(".")))[:2] >= (1, 30)
    ]
    assert versions
    problems = []
    for obj in rendered():
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_own_privileged_namespace() -> None:
    (namespace,) = objects("Namespace").values()
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels[EXEMPT] == "true"
    for obj in rendered():
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qcdr"
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


def test_rbac_reads_pods_only() -> None:
    (role,) = objects("ClusterRole").values()
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not objects("Role")
    (binding,) = objects("ClusterRoleBinding").values()
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "qcdr-node-agent", "namespace": NAMESPACE}
    ]
    assert set(objects("ServiceAccount")) == {"qcdr-node-agent"}


def test_daemonset() -> None:
    daemonset = objects("DaemonSet")["qcdr-node-agent"]
    template = daemonset["spec"]["template"]
    assert template["metadata"]["labels"][EXEMPT] == "true"
    spec = template["spec"]
    assert spec["hostPID"] is True
    assert not spec.get("hostNetwork")
    assert not spec.get("hostIPC")
    assert spec["serviceAccountName"] == "qcdr-node-agent"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    (container,) = spec["containers"]
    assert container["image"] == "qcdr/response:0.1.0"
    assert container["args"] == ["node-agent"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "qcdr-datastores", "key": "redis-url"}
    (config,) = objects("ConfigMap").values()
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert yaml.safe_load(config["data"]["QCDR_PROTECTED_NAMESPACES"]) == [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "qualys-system",
        NAMESPACE,
    ]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}

    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {
        "KILL",
        "SYS_PTRACE",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "CHOWN",
        "FOWNER",
    }
    assert container["resources"]["limits"]["memory"]

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    # containerd through CRI, and the host's cgroups for pause (CRI has none)
    assert config["data"]["QCDR_CONTAINER_RUNTIME"] == "cri"
    assert volumes["cri-sock"]["hostPath"] == {"path": "/run/containerd/containerd.sock", "type": "Socket"}
    assert config["data"]["QCDR_CRI_ENDPOINT"] == f"unix://{mounts['cri-sock']}"
    assert volumes["host-cgroup"]["hostPath"] == {"path": "/sys/fs/cgroup", "type": "Directory"}
    assert config["data"]["QCDR_CGROUP_ROOT"] == mounts["host-cgroup"]
    for name in ("quarantine", "forensics"):
        assert volumes[name]["hostPath"] == {"path": f"/var/lib/qcdr/{name}", "type": "DirectoryOrCreate"}
        assert config["data"][f"QCDR_{name.upper()}_ROOT"] == mounts[name]
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert host_paths == {
        "/run/containerd/containerd.sock",
        "/sys/fs/cgroup",
        "/var/lib/qcdr/quarantine",
        "/var/lib/qcdr/forensics",
    }


def test_docker_engine_variant() -> None:
    docs = rendered("node-agent-docker-engine")
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert config["data"]["QCDR_CONTAINER_RUNTIME"] == "docker"
    assert volumes["docker-sock"]["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert config["data"]["QCDR_DOCKER_HOST"] == f"unix://{mounts['docker-sock']}"
    assert not {"cri-sock", "host-cgroup"} & (set(volumes) | set(mounts))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_network_policies_default_deny() -> None:
    policies = objects("NetworkPolicy")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    agent = policies["qcdr-node-agent"]["spec"]
    (ingress,) = agent["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 9102}]
    egress_ports = {p["port"] for rule in agent["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 6379, 443, 6443}


def test_settings_read_the_manifest_environment(monkeypatch: Any) -> None:
    from qcdr_response.node_agent.settings import NodeAgentSettings

    (config,) = objects("ConfigMap").values()
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NODE_NAME", "worker-3.example")
    settings = NodeAgentSettings()
    assert settings.node_name == "worker-3.example"
    assert (settings.container_runtime, settings.cri_endpoint) == ("cri", "unix:///run/qcdr/cri.sock")
    assert str(settings.cgroup_root) == "/host/sys/fs/cgroup"
    assert settings.docker_host == "unix:///run/qcdr/docker.sock"
    assert settings.http_port == 9102
    assert str(settings.quarantine_root) == "/var/lib/qcdr/quarantine"
    assert NAMESPACE in settings.protected_namespaces
