"""The ATT&CK rules against real Tetragon exports (shared/corpora/tetragon, read at run time).

The book "Security Observability with eBPF" recorded an attack chain: a privileged pod, nsenter
into the host's namespaces, a static pod written for persistence, a Merlin C2 agent, then
collection and exfiltration over SSH. Every step must produce a finding; the benign events around
it (nginx, curl, container start-up, process exits) must not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qcdr_analysis.detectors import attack_rules
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

from tests.analysis.conftest import load_events, tetragon_event

pytestmark = pytest.mark.shared

BOOK = "docs/security-observability-with-ebpf/03_chapter"
CHAIN = f"{BOOK}/03_security_observability_events"

# corpus file -> (rules that must match, category, technique the finding must carry)
EXPECTED = {
    # 1. a shell in the privileged pod (kubectl exec)
    f"{CHAIN}/01_reaching_the_host_namespace/privileged-pod-bash.json": (
        {"shell-in-privileged-container", "interactive-shell-via-runtime"},
        "container_escape",
        "T1611",
    ),
    # 2. nsenter into PID 1's namespaces, and the host shell it starts
    f"{CHAIN}/01_reaching_the_host_namespace/privileged-pod-nsenter.json": (
        {"nsenter-host-pid1", "namespace-tool-in-container"},
        "container_escape",
        "T1611",
    ),
    f"{CHAIN}/01_reaching_the_host_namespace/host-namespace-bash.json": (
        {"shell-after-nsenter", "shell-in-privileged-container"},
        "container_escape",
        "T1611",
    ),
    # 3. persistence: a static pod written into the kubelet's manifest directory
    f"{CHAIN}/02_persistance/merlin-agent-insert-pod-spec.json": (
        {"static-pod-manifest-dir"},
        "persistence",
        "T1543.005",
    ),
    # 4. command and control: the Merlin agent (built into /tmp by `go run`) calls home
    f"{CHAIN}/02_persistance/merlin-agent-go-start.json": (
        {"execution-from-temp-dir"},
        "container_drift",
        "T1204.002",
    ),
    f"{CHAIN}/02_persistance/merlin-agent-go-connect.json": (
        {"temp-binary-network-connection"},
        "networking_c2_communication",
        "T1071",
    ),
    f"{CHAIN}/02_persistance/merlin-agent-job-connect.json": (
        {"temp-binary-network-connection"},
        "networking_c2_communication",
        "T1071",
    ),
    # 5. collection and exfiltration with the node's SSH key
    f"{CHAIN}/03_post_exploitation_techniques/merlin-agent-7z.json": (
        {"archive-in-container"},
        "collection",
        "T1560.001",
    ),
    f"{CHAIN}/03_post_exploitation_techniques/merlin-agent-scp.json": (
        {"ssh-private-key", "file-copy-over-ssh"},
        "credential_access",
        "T1048",
    ),
    f"{CHAIN}/03_post_exploitation_techniques/merlin-agent-scp-ssh.json": (
        {"ssh-private-key"},
        "credential_access",
        "T1552.004",
    ),
    # other real events with a hook
    f"{BOOK}/00_four_golden_signals/process_kprobe.json": (
        {"account-file-write"},
        "persistence",
        "T1136.001",
    ),
    f"{BOOK}/00_process_lifecycle/cat_process_exec.json": (
        {"keystore-file-read"},
        "credential_access",
        "T1552.001",
    ),
    f"{BOOK}/00_process_lifecycle/nc_process_connect.json": (
        {"netcat-network-connection"},
        "networking_suspicious_communication",
        "T1095",
    ),
    "docs-extracted-events/use-cases__process-lifecycle__namespace-access.block0.json": (
        {"setns-from-container"},
        "container_escape",
        "T1611",
    ),
    "docs-extracted-events/use-cases__filename-access.block0.json": (
        {"account-file-write"},
        "persistence",
        "T1098",
    ),
    "docs-extracted-events/use-cases__host-system-changes__linux-kernel-modules.block1.json": (
        {"kernel-module-loaded"},
        "kernel_module",
        "T1547.006",
    ),
    "docs-extracted-events/use-cases__host-system-changes__linux-kernel-modules.block0.json": (
        {"kernel-module-file-read"},
        "kernel_module",
        "T1547.006",
    ),
    "docs-extracted-events/use-cases__linux-process-credentials__monitor-changes-at-kernel.block0.json": (
        {"credentials-raised-to-root"},
        "privilege_escalation",
        "T1068",
    ),
}

BENIGN = [
    f"{CHAIN}/01_reaching_the_host_namespace/nginx-execution.json",
    f"{CHAIN}/01_reaching_the_host_namespace/nginx-listen.json",
    f"{CHAIN}/01_reaching_the_host_namespace/privileged-pod-init.json",
    f"{CHAIN}/02_persistance/merlin-agent-container-start-runc.json",
    f"{CHAIN}/02_persistance/merlin-agent-container-start-containerd-shim.json",
    f"{BOOK}/00_four_golden_signals/process_exec.json",
    f"{BOOK}/00_four_golden_signals/process_connect.json",
    f"{BOOK}/00_process_lifecycle/lifecycle_sh_process_exec.json",
    "docs-extracted-events/getting-started__execution.block0.json",
    "docs-extracted-events/use-cases__security-profiles__record-linux-capabilities.block0.json",
    "testdata/events.json",
]


@pytest.fixture(scope="module")
def state() -> attack_rules.State:
    return attack_rules.setup(attack_rules.Config())


def findings_for(corpus: Path, relative: str, state: attack_rules.State) -> list[Finding]:
    path = corpus / relative
    assert path.is_file(), f"corpus file moved: {relative}"
    events = [tetragon_event(raw) for raw in load_events(path)]
    return attack_rules.detect(events, state)


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_attack_chain_step_produces_its_finding(
    tetragon_corpus: Path, state: attack_rules.State, relative: str
) -> None:
    rules, category, technique = EXPECTED[relative]
    (finding,) = findings_for(tetragon_corpus, relative, state)
    assert finding.kind is FindingKind.ATTACK_TECHNIQUE
    assert set(finding.attributes["rules"]) == rules
    assert finding.category == category
    assert technique in finding.techniques


@pytest.mark.parametrize("relative", BENIGN)
def test_benign_events_produce_nothing(
    tetragon_corpus: Path, state: attack_rules.State, relative: str
) -> None:
    assert findings_for(tetragon_corpus, relative, state) == []


def test_every_corpus_event_is_read_and_exits_never_match(
    tetragon_corpus: Path, state: attack_rules.State
) -> None:
    files = sorted((tetragon_corpus / "docs").rglob("*.json")) + sorted(
        (tetragon_corpus / "docs-extracted-events").glob("*.json")
    )
    assert len(files) >= 50
    total = matched = 0
    for path in files:
        for raw in load_events(path):
            event = tetragon_event(raw)
            findings = attack_rules.detect([event], state)
            total += 1
            matched += len(findings)
            assert len(findings) <= 1  # one event, at most one finding
            if event.category in ("process_exit", "process_close"):
                assert findings == [], path.name  # the exec already told the story
    assert total >= 55
    assert matched >= len(EXPECTED)


def test_the_whole_chain_in_one_batch(tetragon_corpus: Path, state: attack_rules.State) -> None:
    """The chain as one micro-batch (the way the consumer sees it): one finding per step, and the
    chain covers escape, persistence, command and control and exfiltration."""
    events = [tetragon_event(raw) for relative in EXPECTED for raw in load_events(tetragon_corpus / relative)]
    findings = attack_rules.detect(events, state)
    assert len(findings) == len(EXPECTED) == len({f.id for f in findings})
    techniques = {t for f in findings for t in f.techniques}
    assert {"T1611", "T1543.005", "T1071", "T1048", "T1552.004"} <= techniques
