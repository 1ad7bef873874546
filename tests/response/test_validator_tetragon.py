"""TracingPolicy validation: the original system's invalid shapes, Tetragon's limits and version
rules, and the gate that every upstream example loads on the releases it was written for."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_response.policies.targets import TetragonTarget
from qcdr_response.policies.validator import VERSION_CODES, PolicyIssue, errors
from qcdr_response.policies.validator import TetragonCode as C
from qcdr_response.policies.validator_tetragon import validate_tracing_policy

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT = TetragonTarget()  # 1.5 on 5.10
NEWEST = TetragonTarget("1.7", "6.8")


def load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((FIXTURES / name).read_text()))


def make_policy(
    *,
    selector: dict[str, Any] | None = None,
    args: list[dict[str, Any]] | None = None,
    call: str = "sys_execve",
    **hook: Any,
) -> dict[str, Any]:
    """A minimal valid policy (audit nmap executions); pieces can be replaced."""
    chosen = selector or {
        "matchArgs": [{"index": 0, "operator": "Postfix", "values": ["/nmap"]}],
        "matchActions": [{"action": "Post"}],
    }
    kprobe = {
        "call": call,
        "syscall": call.startswith("sys_"),
        "args": args if args is not None else [{"index": 0, "type": "string"}],
        "selectors": [chosen],
        **hook,
    }
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "qcdr-test"},
        "spec": {"kprobes": [kprobe]},
    }


def codes(issues: list[PolicyIssue], severity: str = "error") -> set[str]:
    return {i.code for i in issues if i.severity == severity}


# --- the original system's invalid policies (original-system §14.2 and §14.29) -----------------

REJECTED = [
    ("tg-dport-on-sockaddr.yaml", C.OPERATOR, "sockaddr only supports"),  # §14.12
    ("tg-contains-operator.yaml", C.OPERATOR, "'Contains' is not a Tetragon matchArgs operator"),  # §14.13
    ("tg-in-operator.yaml", C.OPERATOR, "'In' is not a Tetragon matchArgs operator"),  # §14.13
    ("tg-issocket-operator.yaml", C.OPERATOR, "'IsSocket' is not a Tetragon matchArgs operator"),  # §14.13
    ("tg-symbolic-mask.yaml", C.VALUE, "does not resolve symbolic constants"),  # §14.14
    ("tg-too-many-int-values.yaml", C.LIMIT, "use InMap"),  # §14.14
    ("tg-hostname-saddr.yaml", C.VALUE, "not an IP address or CIDR"),  # §14.15
    ("tg-glob-prefix.yaml", C.STRING_MATCH, "'*' is not a wildcard"),  # §14.15
    ("tg-matchbinaries-map.yaml", C.BINARIES, "must be a list"),  # §14.16
    ("tg-podselector-namespace.yaml", C.WORKLOAD_SELECTOR, "no namespace field"),  # §14.17
    ("tg-undeclared-arg.yaml", C.ARG_REF, "refers to no declared argument"),  # §14.18
    ("tg-postfix-on-sockaddr.yaml", C.OPERATOR, "Postfix does not apply to a sockaddr"),  # §14.19
    ("tg-daddr-on-sockaddr.yaml", C.OPERATOR, "DAddr does not apply to a sockaddr"),  # §14.19
    ("tg-sizeargindex-on-buffer.yaml", C.ARG, "points at the buffer itself"),  # §14.20
    ("tg-label-timestamp.yaml", C.LABELS, "'2026-12-04T16:30:00Z' may only contain"),  # §14.29
    ("tg-invalid-name.yaml", C.NAME, "is not a DNS-1123 subdomain"),  # §14.29
]


@pytest.mark.parametrize(("fixture", "code", "fragment"), REJECTED, ids=[r[0] for r in REJECTED])
def test_original_invalid_shapes_are_rejected(fixture: str, code: str, fragment: str) -> None:
    found = errors(validate_tracing_policy(load(f"rejected/{fixture}"), DEFAULT))
    assert any(i.code == code and fragment in i.message for i in found), found


@pytest.mark.parametrize("fixture", sorted(p.name for p in (FIXTURES / "accepted").glob("tg-*.yaml")))
def test_accepted_fixtures_have_no_errors(fixture: str) -> None:
    assert errors(validate_tracing_policy(load(f"accepted/{fixture}"), DEFAULT)) == []


def test_minimal_policy_is_clean() -> None:
    assert validate_tracing_policy(make_policy(), DEFAULT) == []


def test_issue_paths_point_at_the_offending_entry() -> None:
    selector = {
        "matchArgs": [
            {"index": 0, "operator": "Postfix", "values": ["/nmap"]},
            {"index": 0, "operator": "Contains", "values": ["x"]},
        ]
    }
    (issue,) = validate_tracing_policy(make_policy(selector=selector), DEFAULT)
    assert issue.path == "spec.kprobes[0].selectors[0].matchArgs[1]"


# --- Tetragon's load-time limits ---------------------------------------------------------------


def _args(count: int) -> list[dict[str, Any]]:
    return [{"index": i, "type": "int"} for i in range(count)]


LIMIT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("six selectors", {"selectors": [{"matchActions": [{"action": "Post"}]}] * 6}, "at most 5 per hook"),
    (
        "six arg filters",
        {
            "args": _args(6),
            "selectors": [
                {"matchArgs": [{"index": i, "operator": "Equal", "values": ["1"]} for i in range(6)]}
            ],
        },
        "at most 5",
    ),
    ("four actions", {"selectors": [{"matchActions": [{"action": "Post"}] * 4}]}, "at most 3 per selector"),
    ("seventeen tags", {"tags": [f"t{i}" for i in range(17)]}, "at most 16"),
    (
        "five PIDs",
        {"selectors": [{"matchPIDs": [{"operator": "In", "values": [1, 2, 3, 4, 5]}]}]},
        "at most 4 per matchPIDs",
    ),
    (
        "five namespace values",
        {
            "selectors": [
                {
                    "matchNamespaces": [
                        {"namespace": "Pid", "operator": "In", "values": ["1", "2", "3", "4", "5"]}
                    ]
                }
            ]
        },
        "at most 4",
    ),
]


@pytest.mark.parametrize(("hook", "fragment"), [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES])
def test_limits(hook: dict[str, Any], fragment: str) -> None:
    body = make_policy()
    body["spec"]["kprobes"][0].update(hook)
    found = errors(validate_tracing_policy(body, DEFAULT))
    assert any(i.code == C.LIMIT and fragment in i.message for i in found), found


@pytest.mark.parametrize(
    ("operator", "value", "fragment"),
    [
        ("Prefix", "/" + "a" * 256, "limited to 256"),
        ("Postfix", "/" + "a" * 127, "limited to 127"),
        ("Postfix", "", "matches every string"),
    ],
)
def test_string_match_lengths(operator: str, value: str, fragment: str) -> None:
    selector = {"matchArgs": [{"index": 0, "operator": operator, "values": [value]}]}
    found = errors(validate_tracing_policy(make_policy(selector=selector), DEFAULT))
    assert any(i.code == C.STRING_MATCH and fragment in i.message for i in found), found


def test_match_binaries_rules() -> None:
    selector = {
        "matchBinaries": [
            {"operator": "In", "values": ["/usr/bin/" + "x" * 250]},
            {"operator": "Postfix", "values": ["nc"]},
        ]
    }
    issues = validate_tracing_policy(make_policy(selector=selector), DEFAULT)
    messages = [i.message for i in issues if i.code == C.BINARIES]
    assert any("only one is allowed" in m for m in messages)
    assert any("limited to 255" in m for m in messages)
    assert C.SEMANTICS in codes(issues, "warning")  # Postfix without '/' matches any ...nc


# --- values and operators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg_type", "operator", "values", "ok"),
    [
        ("int", "Mask", ["0x40", "0o2", "010"], True),  # Go base-0 integers
        ("int", "InMap", ["0x40"], False),  # InMap is base 10 only
        ("int", "InMap", ["1", "5:9", "100"], True),
        ("int", "Equal", ["2147483648"], False),  # does not fit int32
        ("uint64", "Equal", ["18446744073709551615"], True),
        ("sock", "DPort", ["70000"], False),
        ("sock", "DPort", ["1024:2048"], True),
        ("sock", "DPort", ["\xb2"], False),  # '²'.isdigit() is true: int('²') raised
        ("int", "Equal", ["\u0661\u0662"], False),  # Arabic-Indic digits: int() reads them, Go does not
        ("sock", "Protocol", ["IPPROTO_TCP", "17"], True),
        ("sock", "Family", ["AF_INET9"], False),
        ("sock", "DAddr", ["10.0.0.0/8", "::1"], True),
        ("file", "Equal", ["/etc/passwd"], True),
        ("file", "GT", ["1"], False),
        ("cred", "Equal", ["0"], False),  # not filterable in the kernel
        ("cap_effective", "Equal", ["CAP_SYS_ADMIN,CAP_NET_RAW"], True),
    ],
)
def test_operator_values_per_type(arg_type: str, operator: str, values: list[str], ok: bool) -> None:
    selector = {"matchArgs": [{"index": 0, "operator": operator, "values": values}]}
    body = make_policy(selector=selector, args=[{"index": 0, "type": arg_type}], call="security_x")
    assert (errors(validate_tracing_policy(body, DEFAULT)) == []) is ok


def test_values_must_be_strings() -> None:
    selector = {"matchArgs": [{"index": 0, "operator": "Equal", "values": [0]}]}
    body = make_policy(selector=selector, args=[{"index": 0, "type": "int"}])
    assert C.STRUCTURE in codes(validate_tracing_policy(body, DEFAULT))


def test_inmap_list_must_exist() -> None:
    selector = {"matchArgs": [{"index": 0, "operator": "InMap", "values": ["list:nope"]}]}
    body = make_policy(selector=selector, args=[{"index": 0, "type": "syscall64"}])
    assert C.VALUE in codes(validate_tracing_policy(body, DEFAULT))


def test_tracepoint_filters_address_args_by_position() -> None:
    body = make_policy()
    body["spec"] = {
        "tracepoints": [
            {
                "subsystem": "raw_syscalls",
                "event": "sys_enter",
                "args": [{"index": 4, "type": "syscall64"}],
                "selectors": [{"matchArgs": [{"index": 0, "operator": "InMap", "values": ["1", "2"]}]}],
            }
        ]
    }
    assert errors(validate_tracing_policy(body, DEFAULT)) == []
    body["spec"]["tracepoints"][0]["selectors"][0]["matchArgs"][0]["index"] = 4
    assert C.ARG_REF in codes(validate_tracing_policy(body, DEFAULT))


def test_duplicate_and_untyped_args() -> None:
    body = make_policy(args=[{"index": 0, "type": "string"}, {"index": 0, "type": "int"}, {"index": 1}])
    messages = [i.message for i in validate_tracing_policy(body, DEFAULT) if i.code == C.ARG]
    assert any("declared twice" in m for m in messages)
    assert any("needs a type" in m for m in messages)


# --- actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "code", "fragment"),
    [
        ({"action": "Override"}, C.ACTION, "needs argError"),
        ({"action": "Signal"}, C.ACTION, "needs argSig"),
        ({"action": "Kill"}, C.ACTION, "unknown action"),
        ({"action": "NotifyEnforcer", "argSig": 9}, C.ACTION, "needs an `enforcers` entry"),
        ({"action": "Sigkill", "rateLimit": "1m"}, C.ACTION, "only valid with the Post action"),
        ({"action": "Post", "rateLimit": "1x"}, C.RATE_LIMIT, "optional s/m/h suffix"),
        ({"action": "Post", "rateLimit": "5m\n"}, C.RATE_LIMIT, "optional s/m/h suffix"),
        ({"action": "Post", "rateLimit": "\u0665m"}, C.RATE_LIMIT, "optional s/m/h suffix"),  # Arabic 5
        ({"action": "Post", "rateLimit": "5m", "rateLimitScope": "node"}, C.RATE_LIMIT, "thread, process"),
        ({"action": "Set", "argIndex": 0, "argValue": 1}, C.VERSION, "needs Tetragon >= 1.7"),
    ],
)
def test_action_rules(action: dict[str, Any], code: str, fragment: str) -> None:
    selector = {
        "matchArgs": [{"index": 0, "operator": "Postfix", "values": ["/nmap"]}],
        "matchActions": [action],
    }
    found = errors(validate_tracing_policy(make_policy(selector=selector), DEFAULT))
    assert any(i.code == code and fragment in i.message for i in found), found


def test_override_is_not_available_on_tracepoints() -> None:
    body = make_policy()
    body["spec"] = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_openat",
                "selectors": [{"matchActions": [{"action": "Override", "argError": -1}]}],
            }
        ]
    }
    assert any("not supported on tracepoints" in i.message for i in validate_tracing_policy(body, DEFAULT))


def test_fd_actions_are_deprecated_not_rejected() -> None:
    selector = {"matchActions": [{"action": "FollowFD", "argFd": 0, "argName": 1}]}
    issues = validate_tracing_policy(make_policy(selector=selector), DEFAULT)
    assert errors(issues) == []
    assert C.DEPRECATED in codes(issues, "warning")


# --- kinds, scope, metadata --------------------------------------------------------------------


def test_namespaced_policy_needs_a_namespace_and_no_host_selector() -> None:
    body = make_policy()
    body["kind"] = "TracingPolicyNamespaced"
    body["spec"]["hostSelector"] = {}
    messages = [i.message for i in validate_tracing_policy(body, NEWEST) if i.code == C.SCOPE]
    assert any("metadata.namespace" in m for m in messages)
    assert any("must not set hostSelector" in m for m in messages)


def test_cluster_policy_must_not_carry_a_namespace() -> None:
    body = make_policy()
    body["metadata"]["namespace"] = "default"
    assert C.SCOPE in codes(validate_tracing_policy(body, DEFAULT))


@pytest.mark.parametrize(
    ("field", "value"),
    [("apiVersion", "cilium.io/v1"), ("kind", "TracingPolicies"), ("extra", {})],
)
def test_top_level_shape(field: str, value: Any) -> None:
    body = make_policy()
    body[field] = value
    assert errors(validate_tracing_policy(body, DEFAULT))


@pytest.mark.parametrize(
    "labels",
    [{"a": "x" * 64}, {"bad key!": "x"}, {"ok": True}, {"ok": "-leading"}],
    ids=["value too long", "bad key", "non-string value", "bad edge"],
)
def test_label_rules(labels: dict[str, Any]) -> None:
    body = make_policy()
    body["metadata"]["labels"] = labels
    assert C.LABELS in codes(validate_tracing_policy(body, DEFAULT))


# --- warnings that do not block ----------------------------------------------------------------


def test_execve_argv_typed_string_is_a_warning() -> None:
    body = make_policy(args=[{"index": 0, "type": "string"}, {"index": 1, "type": "string"}])
    issues = validate_tracing_policy(body, DEFAULT)
    assert errors(issues) == []
    assert any("argv" in i.message for i in issues if i.code == C.SEMANTICS)


@pytest.mark.parametrize(
    "call", ["sys_open", "sys_chmod", "sys_rename", "sys_unlink", "sys_fork", "sys_symlink"]
)
def test_syscalls_missing_on_arm64_are_warnings(call: str) -> None:
    issues = validate_tracing_policy(make_policy(call=call), DEFAULT)
    assert errors(issues) == []
    assert any("arm64" in i.message for i in issues if i.code == C.PORTABILITY)


def test_non_syscall_hook_with_default_syscall_flag_is_a_warning() -> None:
    body = make_policy(call="security_file_open", args=[{"index": 0, "type": "file"}])
    del body["spec"]["kprobes"][0]["syscall"]
    body["spec"]["kprobes"][0]["selectors"] = []
    assert C.PORTABILITY in codes(validate_tracing_policy(body, DEFAULT), "warning")


# --- versions and kernels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (TetragonTarget("1.5", "5.10"), C.VERSION),
        (TetragonTarget("1.7", "6.8"), C.KERNEL),
        (TetragonTarget("1.7", "6.17"), None),
    ],
    ids=["old tetragon", "old kernel", "supported"],
)
def test_substring_needs_tetragon_17_and_kernel_617(target: TetragonTarget, expected: str | None) -> None:
    selector = {"matchArgs": [{"index": 0, "operator": "SubString", "values": ["nmap"]}]}
    found = codes(validate_tracing_policy(make_policy(selector=selector), target))
    assert found == ({expected} if expected else set())


@pytest.mark.parametrize(
    ("version", "ok"), [("1.5", False), ("1.6", True)], ids=["before InRange", "with InRange"]
)
def test_inrange_needs_tetragon_16(version: str, ok: bool) -> None:
    selector = {"matchArgs": [{"index": 0, "operator": "InRange", "values": ["0:10"]}]}
    body = make_policy(selector=selector, args=[{"index": 0, "type": "int"}])
    assert (errors(validate_tracing_policy(body, TetragonTarget(version))) == []) is ok


def test_unreleased_spec_fields_are_version_errors() -> None:
    body = make_policy()
    body["spec"]["nodeSelector"] = {"matchLabels": {"pool": "gpu"}}
    (issue,) = errors(validate_tracing_policy(body, NEWEST))
    assert issue.code in VERSION_CODES
    assert "1.8" in issue.message


@pytest.mark.parametrize(
    ("version", "kernel", "fragment"),
    [
        ("1.3", "5.10", "not supported"),
        ("1.8", "6.8", "not supported"),
        ("1.5", "4.19", "kernel"),
        ("x", "5.10", "MAJOR.MINOR"),
    ],
)
def test_unsupported_targets_are_refused(version: str, kernel: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        TetragonTarget(version, kernel)


def test_target_accepts_patch_and_kernel_release_strings() -> None:
    target = TetragonTarget("v1.6.2", "6.8.0-1019-aws")
    assert (target.release, target.kernel_release) == ((1, 6), (6, 8))


# --- the upstream corpus: every example must load on the releases it fits --------------------

# The quickstart examples are templates applied as `envsubst < x.yaml | kubectl apply -n default -f -`:
# substitute the same way (the values are the docs' example CIDRs) and give namespaced objects the
# namespace kubectl would. Anything else is validated exactly as published.
TEMPLATE_VALUES = {"PODCIDR": "10.244.0.0/16", "SERVICECIDR": "10.96.0.0/12"}
APPLY_NAMESPACE = "default"
CORPUS_FILES = 83
CORPUS_POLICIES = 82  # one file holds only an EventChecker, one a Pod next to its policy

# Examples excluded per target, each because the validator reports only version errors for it.
EXCLUDED = {
    "1.5/5.10": {
        "tracingpolicy/usdt.yaml": "usdts needs Tetragon >= 1.6",
        "tracingpolicy/usdt-set.yaml": "usdts needs Tetragon >= 1.6",
        "tracingpolicy/lsm_bprm_check.yaml": "imaHash needs kernel >= 5.11",
    },
    "1.7/6.8": {},
}


def _as_applied(doc: dict[str, Any]) -> dict[str, Any]:
    text = re.sub(r"\$\{(\w+)\}", lambda m: TEMPLATE_VALUES.get(m.group(1), m.group(0)), yaml.safe_dump(doc))
    applied: dict[str, Any] = yaml.safe_load(text)
    if applied.get("kind") == "TracingPolicyNamespaced":
        applied.setdefault("metadata", {}).setdefault("namespace", APPLY_NAMESPACE)
    return applied


def upstream_policies(shared: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    root = shared / "corpora" / "tetragon" / "examples"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) == CORPUS_FILES, "the upstream corpus changed: review EXCLUDED"
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("TracingPolicy", "TracingPolicyNamespaced"):
                yield path.relative_to(root).as_posix(), _as_applied(doc)


@pytest.mark.shared
@pytest.mark.parametrize("target", [DEFAULT, NEWEST], ids=["1.5/5.10", "1.7/6.8"])
def test_upstream_examples_load(shared_path: Path, target: TetragonTarget) -> None:
    key = f"{target.version}/{target.kernel}"
    policies = list(upstream_policies(shared_path))
    assert len(policies) == CORPUS_POLICIES
    excluded: dict[str, str] = {}
    failures: dict[str, list[PolicyIssue]] = {}
    for name, doc in policies:
        found = errors(validate_tracing_policy(doc, target))
        if found and all(i.code in VERSION_CODES for i in found):
            # Data-driven exclusion: the example needs a newer Tetragon or kernel than the target.
            excluded[name] = "; ".join(sorted({i.message for i in found}))
        elif found:
            failures[name] = found
    for name, why in sorted(excluded.items()):
        print(f"excluded on {key}: {name}: {why}")
    assert failures == {}
    assert set(excluded) == set(EXCLUDED[key])
    for name, fragment in EXCLUDED[key].items():
        assert fragment in excluded[name]


@pytest.mark.parametrize(
    ("value", "ok"), [("4026531836", True), ("host_ns", True), ("\xb2", False), ("42x", False)]
)
def test_namespace_values_are_inode_numbers_in_ascii_digits(value: str, ok: bool) -> None:
    """'²'.isdigit() is true: it passed as an inode number, which Tetragon cannot parse."""
    selector = {"matchNamespaces": [{"namespace": "Pid", "operator": "In", "values": [value]}]}
    found = errors(validate_tracing_policy(make_policy(selector=selector), DEFAULT))
    assert any("namespace inode number" in i.message for i in found) is not ok, found
