"""The dispatcher: scoping, names, annotations, determinism, Override split, network policies."""

import random
from datetime import date
from pathlib import Path

import pytest
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import EnforcementAction, GenerationConfig, OverrideHooks
from qcdr_response.policies.generate import CheckResult, PolicyGenerator

from tests.response.factories import make_event

CFG = GenerationConfig(run_date=date(2026, 12, 4))


def _events() -> list:
    return [
        make_event(
            category="Network_Scanning_Utility",
            techniques=["T1046"],
            namespace="payments",
            process={"name": "nmap", "path": "/usr/bin/nmap"},
        ),
        make_event(
            category="Network_Scanning_Utility",
            techniques=["T1046"],
            namespace="web",
            process={"name": "bash", "path": "/bin/bash"},
        ),
        make_event(category="Network_Scanning_Utility", techniques=["T1046"], namespace=None),
        make_event(
            category="Crypto_Mining",
            techniques=["T1496"],
            namespace="web",
            process={"name": "xmrig-custom", "path": "/tmp/xmrig-custom"},
            network={"ip": "45.9.148.10", "port": 3333},
        ),
        make_event(
            category="Networking_C2_Communication",
            techniques=["T1059.004"],
            namespace="web",
            network={"ip": "2a01:4f8::7", "port": 4444, "domain": "c2.example.net"},
        ),
        make_event(category="Discovery", techniques=[], namespace="web"),
    ]


def test_scoping_names_and_counts() -> None:
    result = PolicyGenerator(CFG).generate(_events())
    scan = result.families["network-scan"]
    assert scan.finding_count == 3
    kinds = [(d.kind, d.namespace, d.name) for d in scan.documents]
    assert kinds == [
        ("TracingPolicy", None, "cdr-block-network-scan-clusterwide"),
        ("TracingPolicyNamespaced", "payments", "cdr-block-network-scan"),
        ("TracingPolicyNamespaced", "web", "cdr-block-network-scan"),
    ]
    assert {d.filename for d in scan.documents} == {"cdr-block-network-scan-20261204.yaml"}
    assert sum(int(d.body["metadata"]["annotations"]["qcdr.io/finding-count"]) for d in scan.documents) == 3
    assert result.unmapped["Discovery"].count == 1
    assert "no ATT&CK technique" in result.unmapped["Discovery"].reason
    for doc in result.documents:
        assert "20261204" not in doc.name
        assert doc.body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "qcdr"
        assert doc.body["metadata"]["annotations"]["qcdr.io/generated-date"] == "2026-12-04"


def test_shells_never_join_exec_kill_lists_but_real_tools_do() -> None:
    result = PolicyGenerator(CFG.model_copy(update={"action": EnforcementAction.SIGKILL})).generate(_events())
    web = next(d for d in result.families["network-scan"].documents if d.namespace == "web")
    values = web.body["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["values"]
    assert "/bash" not in values
    assert "/nmap" in values
    miner = result.families["crypto-mining"].documents[0]
    assert "/xmrig-custom" in miner.body["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["values"]


def test_output_is_deterministic_whatever_the_input_order() -> None:
    events = _events()
    first = PolicyGenerator(CFG).generate(events)
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    second = PolicyGenerator(CFG).generate(shuffled)
    assert [d.content_hash for d in first.documents] == [d.content_hash for d in second.documents]


def test_override_goes_to_separate_policies() -> None:
    cfg = CFG.model_copy(update={"action": EnforcementAction.OVERRIDE})
    result = PolicyGenerator(cfg).generate(_events())
    docs = result.families["network-scan"].documents
    main = [d for d in docs if not d.name.endswith("-override")]
    over = [d for d in docs if d.name.endswith("-override")]
    assert len(main) == len(over) == 3
    for doc in main:
        actions = {
            a["action"]
            for h in doc.body["spec"]["kprobes"]
            for s in h["selectors"]
            for a in s["matchActions"]
        }
        assert actions == {"Post"}
    for doc in over:
        for hook in doc.body["spec"]["kprobes"]:
            assert hook["call"].startswith(("sys_", "security_"))
            for sel in hook["selectors"]:
                assert sel["matchActions"] == [{"action": "Override", "argError": -1}]


def test_network_policies_are_safe_shapes() -> None:
    result = PolicyGenerator(CFG).generate(_events())
    cnp = next(d for d in result.network_documents if d.kind == "CiliumClusterwideNetworkPolicy")
    spec = cnp.body["spec"]
    assert spec["enableDefaultDeny"] == {"egress": False, "ingress": False}
    assert spec["egressDeny"][0] == {"toCIDRSet": [{"cidr": "45.9.148.10/32"}, {"cidr": "2a01:4f8::7/128"}]}
    for rule in spec["egressDeny"][1:]:
        assert rule["toEntities"] == ["world"]
    assert "toFQDNs" not in str(spec)
    assert result.iocs.domains.keys() == {"c2.example.net"}
    tp = next(d for d in result.network_documents if d.kind == "TracingPolicy")
    assert tp.filename == "cdr-dynamic-blocklist.yaml"
    assert tp.body["spec"]["kprobes"][0]["call"] == "tcp_connect"


def test_lint_refusal_demotes_to_audit_and_validation_error_drops() -> None:
    def checker(body: dict) -> CheckResult:
        if body["metadata"]["name"].startswith("cdr-block-crypto"):
            return CheckResult(errors=["bad"])
        enforcing = any(
            a["action"] == "Sigkill"
            for h in body["spec"].get("kprobes", [])
            for s in h["selectors"]
            for a in s["matchActions"]
        )
        return CheckResult(lint=["QCDR-L001: too broad"] if enforcing else [])

    cfg = CFG.model_copy(update={"action": EnforcementAction.SIGKILL})
    result = PolicyGenerator(cfg, checker=checker).generate(_events())
    assert "crypto-mining" not in {d.family for d in result.documents}
    demoted = result.families["network-scan"].documents[0]
    assert demoted.body["metadata"]["labels"]["qcdr.io/action"] == "post"
    assert "QCDR-L001" in demoted.body["metadata"]["annotations"]["qcdr.io/enforcement-refused"]
    outcomes = {r.outcome for r in result.refusals}
    assert outcomes == {"dropped", "demoted-to-audit"}


@pytest.mark.shared
def test_override_through_bpf_lsm_hooks(shared_path: Path) -> None:
    """--override-hooks lsm: the -override companions refuse through BPF LSM hooks (exec through
    bprm_check_security), valid for Tetragon's CRD and our checks; syscalls with no LSM
    equivalent are left out of the override and named on it."""
    cfg = CFG.model_copy(update={"action": EnforcementAction.OVERRIDE, "override_hooks": OverrideHooks.LSM})
    events = [
        *_events(),
        make_event(
            category="Container_Escape",
            techniques=["T1611"],
            namespace="web",
            process={"name": "nsenter", "path": "/usr/bin/nsenter"},
        ),
    ]
    result = PolicyGenerator(cfg, default_checker(cfg)).generate(events)
    assert result.refusals == []
    over = [d for d in result.documents + result.network_documents if d.name.endswith("-override")]
    assert {d.family for d in over} >= {"network-scan", "crypto-mining", "container-escape", "network-iocs"}
    validator = ManifestValidator(shared_path)
    hooks: dict[str, dict] = {}
    for doc in over:
        assert set(doc.body["spec"]) == {"lsmhooks"}, doc.name
        assert validator.errors(doc.body) == [], doc.name
        for hook in doc.body["spec"]["lsmhooks"]:
            hooks[hook["hook"]] = hook
            for sel in hook["selectors"]:
                assert sel["matchActions"] == [{"action": "Override", "argError": -1}]
    assert set(hooks) >= {"bprm_check_security", "file_permission", "socket_connect"}
    assert hooks["bprm_check_security"]["args"] == [{"index": 0, "type": "linux_binprm"}]
    scan = next(d for d in over if d.family == "network-scan" and d.namespace == "payments")
    (exec_hook,) = scan.body["spec"]["lsmhooks"]
    assert "/nmap" in exec_hook["selectors"][0]["matchArgs"][0]["values"]
    escape = next(d for d in over if d.family == "container-escape")
    noted = escape.body["metadata"]["annotations"]["qcdr.io/not-overridden"]
    assert "sys_setns" in noted
    # the main policies are unchanged: kprobes, audited
    main = next(
        d for d in result.documents if d.family == "container-escape" and not d.name.endswith("-override")
    )
    assert set(main.body["spec"]) == {"kprobes"}
    # the same findings with kprobes: no lsmhooks anywhere
    kprobe_cfg = cfg.model_copy(update={"override_hooks": OverrideHooks.KPROBES})
    plain = PolicyGenerator(kprobe_cfg, default_checker(kprobe_cfg)).generate(events)
    assert all("lsmhooks" not in d.body["spec"] for d in plain.documents + plain.network_documents)
