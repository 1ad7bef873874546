"""Blast-radius lint: the original system's dangerous enforcement is refused, scoped enforcement passes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_response.policies.lint import (
    BROAD_PREFIX,
    HOST_SELECTOR,
    NAMESPACE_CALL,
    NEGATIVE_ONLY,
    SHELL_KILL,
    UNFILTERED,
    LintConfig,
    LintIssue,
    lint_policy,
)

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((FIXTURES / name).read_text()))


def enforcing(
    call: str, selector: dict[str, Any], *, kind: str = "TracingPolicy", **spec: Any
) -> dict[str, Any]:
    """A policy with one kprobe whose single selector Sigkills (extra spec keys allowed)."""
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "qcdr-test", "namespace": "payments"}
        if kind.endswith("Namespaced")
        else {"name": "t"},
        "spec": {
            "kprobes": [
                {
                    "call": call,
                    "syscall": True,
                    "args": [{"index": 0, "type": "string"}],
                    "selectors": [{**selector, "matchActions": [{"action": "Sigkill"}]}],
                }
            ],
            **spec,
        },
    }


def issue_codes(issues: list[LintIssue]) -> set[str]:
    return {i.code for i in issues}


# --- the original system's dangerous enforcement (original-system §14.3) ----------------------

REFUSED = [
    ("lint-container-escape-unshare-setns.yaml", NAMESPACE_CALL, "container runtimes"),  # §2.3 #3
    ("lint-container-escape-unshare-setns.yaml", UNFILTERED, "no matchBinaries and no matchArgs"),
    ("lint-every-execve.yaml", UNFILTERED, "every caller of execve"),  # qcr default branch
    ("lint-cap-sys-admin-every-exec.yaml", UNFILTERED, "every caller of execve"),  # CRS cap-sys-admin
    ("lint-reverse-shell-every-shell.yaml", SHELL_KILL, "every exec of a shell"),  # §2.3 #6
    ("lint-sensitive-file-prefix-home.yaml", BROAD_PREFIX, "'/home/'"),  # §2.3 #8
    ("lint-file-anomaly-prefix-root.yaml", BROAD_PREFIX, "'/'"),  # file anomaly default
    ("lint-crs-cgroup-escape.yaml", BROAD_PREFIX, "'/sys/fs/cgroup/'"),  # CRS container-escape-cgroup
    ("lint-memfd-create-sigkill.yaml", NAMESPACE_CALL, "memfd_create"),  # drift lockdown
    ("lint-process-hiding-mount-proc.yaml", NAMESPACE_CALL, "mount"),  # CRS process-hiding
    ("lint-host-selector.yaml", HOST_SELECTOR, "host processes"),
    ("lint-negative-only-egress-kill.yaml", NEGATIVE_ONLY, "every filter is a negation"),
]


@pytest.mark.parametrize(("fixture", "code", "fragment"), REFUSED, ids=[f"{r[0]}:{r[1]}" for r in REFUSED])
def test_original_dangerous_policies_are_refused(fixture: str, code: str, fragment: str) -> None:
    found = lint_policy(load(f"rejected/{fixture}"))
    assert any(i.code == code and fragment in i.reason for i in found), found


@pytest.mark.parametrize("fixture", sorted(p.name for p in (FIXTURES / "accepted").glob("tg-*.yaml")))
def test_scoped_policies_pass(fixture: str) -> None:
    assert lint_policy(load(f"accepted/{fixture}")) == []


def test_safe_nmap_kill_passes() -> None:
    body = load("accepted/tg-nmap-exec-kill.yaml")
    assert lint_policy(body) == []
    # ... and it is the binary filter that makes it safe.
    del body["spec"]["kprobes"][0]["selectors"][0]["matchArgs"]
    # "every exec except the runtime's" is no filter at all
    assert issue_codes(lint_policy(body)) == {NEGATIVE_ONLY}
    del body["spec"]["kprobes"][0]["selectors"][0]["matchBinaries"]
    assert issue_codes(lint_policy(body)) == {UNFILTERED}


def test_audit_only_selectors_are_not_judged() -> None:
    body = load("rejected/lint-every-execve.yaml")
    body["spec"]["kprobes"][0]["selectors"][0]["matchActions"] = [{"action": "Post"}]
    assert lint_policy(body) == []


@pytest.mark.parametrize(
    ("prefix", "refused"),
    [
        ("/etc/", True),  # configured broad prefix
        ("/etc", True),
        ("/sys/fs/", True),  # broader than /sys/fs/cgroup/
        ("/opt/", True),  # depth 1
        ("/var/log/", True),  # logrotate and kubelet rotate logs there
        ("/var/lib/kubelet/pods/", False),
        ("/etc/cron.d/", False),
        ("/etc/shadow", False),
        ("/var/run/secrets/kubernetes.io/", False),
    ],
)
def test_prefix_depth_and_broad_prefixes(prefix: str, refused: bool) -> None:
    body = enforcing("sys_openat", {"matchArgs": [{"index": 0, "operator": "Prefix", "values": [prefix]}]})
    assert (BROAD_PREFIX in issue_codes(lint_policy(body))) is refused


def test_prefix_depth_is_configurable() -> None:
    body = enforcing(
        "sys_openat", {"matchArgs": [{"index": 0, "operator": "Prefix", "values": ["/etc/cron.d/"]}]}
    )
    assert BROAD_PREFIX in issue_codes(lint_policy(body, LintConfig(min_prefix_depth=3)))


def test_broad_binary_prefix_is_refused() -> None:
    body = enforcing("sys_connect", {"matchBinaries": [{"operator": "Prefix", "values": ["/usr/"]}]})
    assert BROAD_PREFIX in issue_codes(lint_policy(body))


SHELL_EXEC = {"matchArgs": [{"index": 0, "operator": "Postfix", "values": ["/bash"]}]}
CONTAINERS_ONLY = {"matchNamespaces": [{"namespace": "Pid", "operator": "NotIn", "values": ["host_ns"]}]}
NGINX_PARENT = {"matchParentBinaries": [{"operator": "In", "values": ["/usr/sbin/nginx"]}]}
CLUSTER, NAMESPACED = "TracingPolicy", "TracingPolicyNamespaced"


def _exec(operator: str, value: str) -> dict[str, Any]:
    return {"matchArgs": [{"index": 0, "operator": operator, "values": [value]}]}


@pytest.mark.parametrize(
    ("selector", "spec", "kind", "refused"),
    [
        pytest.param(SHELL_EXEC, {}, CLUSTER, True, id="any shell"),
        pytest.param(_exec("Postfix", "sh"), {}, CLUSTER, True, id="postfix sh"),
        pytest.param(_exec("Equal", "/usr/bin/python3.11"), {}, CLUSTER, True, id="python"),
        pytest.param(SHELL_EXEC, {}, NAMESPACED, False, id="namespaced"),
        pytest.param(SHELL_EXEC, {"podSelector": {"matchLabels": {"app": "web"}}}, CLUSTER, False, id="pods"),
        # An empty podSelector selects everything (host processes too before Tetragon 1.7): no scope.
        pytest.param(SHELL_EXEC, {"podSelector": {}}, CLUSTER, True, id="empty pod selector"),
        pytest.param({**SHELL_EXEC, **CONTAINERS_ONLY}, {}, CLUSTER, False, id="container namespaces"),
        pytest.param({**SHELL_EXEC, **NGINX_PARENT}, {}, CLUSTER, False, id="parent binary"),
    ],
)
def test_shell_kills_need_a_scope(
    selector: dict[str, Any], spec: dict[str, Any], kind: str, refused: bool
) -> None:
    body = enforcing("sys_execve", selector, kind=kind, **spec)
    assert (SHELL_KILL in issue_codes(lint_policy(body))) is refused


def test_killing_shells_for_what_they_do_needs_a_parent() -> None:
    selector = {
        "matchBinaries": [{"operator": "In", "values": ["/bin/bash"]}],
        "matchArgs": [{"index": 0, "operator": "DPort", "values": ["4444"]}],
    }
    assert SHELL_KILL in issue_codes(lint_policy(enforcing("tcp_connect", selector)))
    # Denying one operation (Override) does not kill the shell.
    body = enforcing("tcp_connect", selector)
    body["spec"]["kprobes"][0]["selectors"][0]["matchActions"] = [{"action": "Override", "argError": -1}]
    assert SHELL_KILL not in issue_codes(lint_policy(body))


RUNTIME_PATHS = [
    "/usr/bin/runc",
    "/usr/bin/crun",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/bin/conmon",
    "/usr/bin/crio",
    "/usr/bin/dockerd",
    "/usr/bin/kubelet",
    "/lib/systemd/systemd",
]
RUNTIMES_EXCLUDED = {"operator": "NotIn", "values": RUNTIME_PATHS}


@pytest.mark.parametrize(
    ("call", "binaries", "refused"),
    [
        ("sys_setns", [RUNTIMES_EXCLUDED], False),
        ("__x64_sys_unshare", [{"operator": "NotIn", "values": ["/usr/bin/runc"]}], True),  # not all runtimes
        ("sys_mount", [{"operator": "In", "values": ["/usr/bin/unshare-helper"]}], False),  # named binary
        ("sys_clone3", [{"operator": "In", "values": ["/usr/bin/runc"]}], True),  # targets the runtime
        ("sys_pivot_root", [{"operator": "Prefix", "values": ["/usr/local/"]}], True),  # may hold runtimes
        ("security_sb_mount", [], True),
    ],
)
def test_namespace_sensitive_calls_must_spare_the_runtime(
    call: str, binaries: list[dict[str, Any]], refused: bool
) -> None:
    selector: dict[str, Any] = {"matchArgs": [{"index": 0, "operator": "Mask", "values": ["1"]}]}
    if binaries:
        selector["matchBinaries"] = binaries
    assert (NAMESPACE_CALL in issue_codes(lint_policy(enforcing(call, selector)))) is refused


def test_namespace_sensitive_calls_through_lists() -> None:
    body = enforcing("list:escapes", {"matchArgs": [{"index": 0, "operator": "Mask", "values": ["1"]}]})
    body["spec"]["lists"] = [{"name": "escapes", "type": "syscalls", "values": ["sys_unshare", "sys_setns"]}]
    assert NAMESPACE_CALL in issue_codes(lint_policy(body))


def test_macros_are_expanded_before_judging() -> None:
    body = enforcing("sys_execve", {"macros": ["shells"]})
    body["spec"]["selectorsMacros"] = {"shells": SHELL_EXEC}
    assert issue_codes(lint_policy(body)) == {SHELL_KILL}


def test_host_selector_null_is_not_flagged() -> None:
    body = load("accepted/tg-nmap-exec-kill.yaml")
    body["spec"]["hostSelector"] = None
    assert lint_policy(body) == []


def test_lint_does_not_mutate_its_input() -> None:
    body = load("rejected/lint-reverse-shell-every-shell.yaml")
    before = copy.deepcopy(body)
    lint_policy(body)
    assert body == before


@pytest.mark.shared
def test_upstream_corpus_through_the_lint(shared_path: Path) -> None:
    """Printed, not asserted: some upstream examples are deliberately broad demos."""
    root = shared_path / "corpora" / "tetragon" / "examples"
    flagged = 0
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in (
                "TracingPolicy",
                "TracingPolicyNamespaced",
            ):
                continue
            for issue in lint_policy(doc):
                flagged += 1
                print(f"{path.relative_to(root)}: {issue.code} {issue.path}: {issue.reason}")
    print(f"{flagged} lint findings in the upstream examples")
