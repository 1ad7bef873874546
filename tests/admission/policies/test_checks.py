"""Each policy check, with the original's bypasses as tests (registry and hostPath prefix tricks,
a missing securityContext, ``CAP_`` spellings, socket paths spelt differently)."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_admission.engine import Mode
from qcdr_admission.policies.context import ImageStatus, OpenIssue
from qcdr_admission.policies.defaults import DEFAULT_SECURITY
from qcdr_admission.policies.evaluate import PolicyEngine
from qcdr_admission.policies.model import AdmissionPolicy
from qcdr_admission.policies.registry import load_checks

from tests.admission.policies.factories import container, pod_subject

DIGEST = "sha256:" + "b" * 64


def violations(checks: dict[str, Any], spec: dict[str, Any], **kw: Any) -> list[str]:
    policy = AdmissionPolicy(name="p", checks=checks)
    engine = PolicyEngine([policy], **{k: v for k, v in kw.items() if k in ("images", "runtime")})
    subject_kw = {k: v for k, v in kw.items() if k not in ("images", "runtime")}
    return [r.message for r in engine.evaluate(pod_subject(spec, **subject_kw))]


def one(**fields: Any) -> dict[str, Any]:
    return {"containers": [container(**fields)]}


def test_every_check_module_registers_one_check() -> None:
    registry = load_checks()
    modules = [registry.origin(name) for name in registry.names()]
    assert len(modules) == len(set(modules)) == 18
    ids = [registry.get(n).id for n in registry.names()]
    assert len(set(ids)) == len(ids)


# --- host namespaces: the original looked only when spec.securityContext was set
@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_without_a_security_context(field: str) -> None:
    key = {"hostNetwork": "host_network", "hostPID": "host_pid", "hostIPC": "host_ipc"}[field]
    spec = {field: True, "containers": [container()]}
    assert "securityContext" not in spec
    assert violations({key: True}, spec) == [f"spec.{field}=true is not allowed"]
    assert violations({key: True}, {field: False, "containers": [container()]}) == []


def test_privileged_in_every_container_list() -> None:
    sc: dict[str, Any] = {"securityContext": {"privileged": True}}
    for lst in ("initContainers", "containers", "ephemeralContainers"):
        assert violations({"privileged": True}, {lst: [container(name="x", **sc)]}) == [
            'container "x" must not run privileged'
        ]
    assert violations({"privileged": True}, one(securityContext=None)) == []


@pytest.mark.parametrize(
    "added", [["SYS_ADMIN"], ["sys_admin"], ["CAP_SYS_ADMIN"], ["cap_sys_admin"], ["ALL"]]
)
def test_blocked_capabilities_any_spelling(added: list[str]) -> None:
    spec = one(securityContext={"capabilities": {"add": added}})
    out = violations({"blocked_capabilities": ["SYS_ADMIN", "CAP_NET_RAW"]}, spec)
    assert len(out) == 1
    assert "SYS_ADMIN" in out[0]


def test_read_only_root_fs_and_root_user() -> None:
    assert violations({"read_only_root_fs": True}, one()) != []
    assert (
        violations({"read_only_root_fs": True}, one(securityContext={"readOnlyRootFilesystem": True})) == []
    )
    # no securityContext at all: may be root, refused (the original let it through)
    assert violations({"block_root_user": True}, one()) != []
    assert violations(
        {"block_root_user": True}, {"securityContext": {"runAsUser": 0}, "containers": [container()]}
    )
    spec = {
        "securityContext": {"runAsNonRoot": True},
        "containers": [container(securityContext={"runAsUser": 0})],
    }
    assert "runAsUser=0" in violations({"block_root_user": True}, spec)[0]
    spec = {"securityContext": {"runAsUser": 1000}, "containers": [container()]}
    assert violations({"block_root_user": True}, spec) == []


@pytest.mark.parametrize(
    ("pod", "containers", "expected"),
    [
        # every container overrides the pod's 0: nothing runs as root, but the template says root
        # (a container added without runAsUser would be); the docs say "runAsUser: 0 anywhere"
        (
            {"runAsUser": 0},
            [{"runAsUser": 1000}, {"runAsUser": 1001}],
            ["spec.securityContext must not set runAsUser=0"],
        ),
        (
            {"runAsUser": 0, "runAsNonRoot": True},
            [{"runAsUser": 1000}, None],
            ['spec.securityContext must not set runAsUser=0 (inherited by container "c1")'],
        ),
        (
            {"runAsUser": 1000},
            [{"runAsUser": 0}, None],
            ['container "c0" must not run as root (runAsUser=0)'],
        ),
        (
            {"runAsUser": 0},
            [{"runAsUser": 0}, None],
            [
                'spec.securityContext must not set runAsUser=0 (inherited by container "c1")',
                'container "c0" must not run as root (runAsUser=0)',
            ],
        ),
        ({"runAsUser": 1000}, [{"runAsUser": 1001}, None], []),
    ],
)
def test_root_user_names_where_the_zero_is(
    pod: dict[str, Any], containers: list[dict[str, Any] | None], expected: list[str]
) -> None:
    """A pod-level runAsUser 0 was ignored when every container set a non-zero UID."""
    spec = {
        "securityContext": pod,
        "containers": [container(name=f"c{i}", securityContext=sc) for i, sc in enumerate(containers)],
    }
    assert violations({"block_root_user": True}, spec) == expected


def test_required_labels() -> None:
    checks = {"required_labels": {"values": ["team"], "equal": {"env": "prod"}}}
    assert len(violations(checks, one(), labels={})) == 2
    assert violations(checks, one(), labels={"team": "a", "env": "prod"}) == []


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/app:1", True),
        ("REGISTRY.example.com/app:1", True),
        ("registry.example.com.evil.io/app:1", False),  # prefix trick on the host
        ("registry.example.com:5000/app:1", False),  # another port, another registry
        ("registry.example.com@evil.io/app", False),  # not a reference at all
        ("evil.io/registry.example.com/app", False),  # the allowed host as a path
        ("registry.example.comevil/app", False),  # no dot: a Docker Hub namespace
        ("nginx", False),  # docker.io/library/nginx
        ("docker.io/library/nginx", True),  # allowed below through docker.io/library
        ("index.docker.io/library/nginx", True),
        ("docker.io/librarything/nginx", False),  # path prefix compares by component
    ],
)
def test_allowed_registries_exact_host(image: str, allowed: bool) -> None:
    checks = {"allowed_registries": ["registry.example.com", "docker.io/library/nginx"]}
    if image == "nginx":
        checks = {"allowed_registries": ["registry.example.com"]}
    assert (violations(checks, one(image=image)) == []) is allowed


def test_blocked_registries_exact_host() -> None:
    checks = {"blocked_registries": ["evil.io"]}
    assert violations(checks, one(image="evil.io/app")) != []
    assert violations(checks, one(image="EVIL.IO/app")) != []
    assert violations(checks, one(image="evil.io.example.com/app")) == []
    assert violations(checks, one(image="not a reference")) != []  # unknown registry: refused
    assert violations({"blocked_registries": ["docker.io"]}, one(image="nginx")) != []


def test_digests_and_latest() -> None:
    assert violations({"require_digests": True}, one(image=f"r.io/app@{DIGEST}")) == []
    assert violations({"require_digests": True}, one(image="r.io/app:1")) != []
    assert violations({"require_digests": True}, one(image="r.io/app:@sha256:" + "b" * 64)) != []
    assert violations({"require_digests": True}, one(image="r.io/app:x-@sha256:bbbb")) != []
    latest = {"disallow_latest": True}
    assert violations(latest, one(image="r.io/app")) != []
    assert violations(latest, one(image="r.io/app:latest")) != []
    assert violations(latest, one(image="r.io/app:1.0")) == []
    assert violations(latest, one(image=f"r.io/app:latest@{DIGEST}")) == []


def test_resource_limits() -> None:
    checks = {"require_resource_limits": True}
    assert "cpu, memory" in violations(checks, one())[0]
    assert "memory" in violations(checks, one(resources={"limits": {"cpu": "1"}}))[0]
    assert violations(checks, one(resources={"limits": {"cpu": "1", "memory": "1Gi"}})) == []
    eph = {
        "containers": [container(resources={"limits": {"cpu": "1", "memory": "1"}})],
        "ephemeralContainers": [container(name="dbg")],
    }
    assert violations(checks, eph) == []


def host_path(path: str) -> dict[str, Any]:
    return {"containers": [container()], "volumes": [{"name": "h", "hostPath": {"path": path}}]}


@pytest.mark.parametrize(
    ("path", "blocked"),
    [
        ("/var/run/docker.sock", True),
        ("/run/docker.sock", True),
        ("//var/run//docker.sock", True),
        ("/var/run/./docker.sock", True),
        ("/var/log/../run/docker.sock", True),
        ("/var/run/docker.sock/", True),
        ("/run/containerd/containerd.sock", True),
        ("/var/run/crio/crio.sock", True),
        ("/run/containerd", True),  # the socket's directory
        ("/var/run", True),  # an ancestor exposes it
        ("/", True),
        ("/run/docker.socket-backup", False),
        ("/var/log", False),
        ("/data/docker.sock", False),  # a file named like it elsewhere is not the runtime's
    ],
)
def test_runtime_sockets_by_canonical_path(path: str, blocked: bool) -> None:
    assert (violations({"block_runtime_sockets": True}, host_path(path)) != []) is blocked


@pytest.mark.parametrize(
    ("path", "blocked"),
    [
        ("/var/log", False),
        ("/var/log/pods", False),
        ("/var/log/", False),
        ("/var/logs", True),  # string prefix of the allowed path, not below it
        ("/var/log-evil", True),
        ("/var/log/../../etc", True),
        ("/var/log/../../../", True),
        ("/var", True),  # the allowed path's ancestor
        ("/etc/kubernetes", True),
    ],
)
def test_host_paths_by_component(path: str, blocked: bool) -> None:
    checks = {"blocked_host_paths": {"values": ["/"], "allow": ["/var/log"]}}
    assert (violations(checks, host_path(path)) != []) is blocked


def test_blocked_host_paths_ancestor_of_blocked() -> None:
    checks = {"blocked_host_paths": ["/etc/kubernetes"]}
    assert violations(checks, host_path("/etc")) != []
    assert violations(checks, host_path("/etc/kubernetes/pki/../admin.conf")) != []
    assert violations(checks, host_path("/etc/kube")) == []


def test_automount() -> None:
    checks = {"disallow_automount_service_account_token": True}
    assert violations(checks, one()) != []
    assert violations(checks, {"automountServiceAccountToken": False, "containers": [container()]}) == []


class Images:
    loaded = True

    def lookup(self, image: str) -> ImageStatus | None:
        return {
            "r.io/scanned:1": ImageStatus("a", True, 3),
            "r.io/pending:1": ImageStatus("b", False, None),
        }.get(image)


def test_unscanned_images() -> None:
    checks = {"block_unscanned_images": {"max_severity": 4}}
    assert violations(checks, one(image="r.io/scanned:1"), images=Images()) == []
    assert "not been scanned" in violations(checks, one(image="r.io/pending:1"), images=Images())[0]
    assert "unknown" in violations(checks, one(image="r.io/other:1"), images=Images())[0]
    assert (
        "severity 3"
        in violations(
            {"block_unscanned_images": {"max_severity": 2}}, one(image="r.io/scanned:1"), images=Images()
        )[0]
    )
    # not loaded yet: unknown, unless configured to let it pass
    assert violations({"block_unscanned_images": True}, one()) != []
    assert violations({"block_unscanned_images": {"fail_open_until_loaded": True}}, one()) == []


class Runtime:
    ready = True

    def for_image(self, image: str) -> list[OpenIssue]:
        return [OpenIssue("f1", "source", "high", "x")] if image == "r.io/bad:1" else []

    def for_namespace(self, namespace: str) -> list[OpenIssue]:
        return [OpenIssue("c1", "chain", "critical", "y")] if namespace == "hot" else []


def test_runtime_aware() -> None:
    checks = {"runtime_aware": True}
    assert "f1" in violations(checks, one(image="r.io/bad:1"), runtime=Runtime())[0]
    assert "c1" in violations(checks, one(), namespace="hot", runtime=Runtime())[0]
    assert violations(checks, one(), runtime=Runtime()) == []
    only_chains = {"runtime_aware": {"chains_only": True, "namespace": False}}
    assert violations(only_chains, one(image="r.io/bad:1"), runtime=Runtime()) == []


def test_default_security_closes_the_seed_bypasses() -> None:
    engine = PolicyEngine([DEFAULT_SECURITY])

    def checks(spec: dict[str, Any]) -> set[str]:
        return {r.check for r in engine.evaluate(pod_subject(spec)) if r.mode is Mode.ENFORCE}

    assert checks({"hostPID": True, "containers": [container()]}) == {"hostPID"}  # no securityContext
    assert checks(host_path("/var/log/../../etc")) == {"blockedHostPaths"}
    assert checks(host_path("/var/logs")) == {"blockedHostPaths"}
    assert checks(host_path("/var/run/../run/docker.sock")) == {"blockedHostPaths", "blockRuntimeSockets"}
    assert checks(host_path("/var/log/pods")) == set()
    assert checks(one(securityContext={"capabilities": {"add": ["cap_net_raw"]}})) == {"blockedCapabilities"}
    assert checks(one()) == set()
