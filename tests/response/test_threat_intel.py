"""The threat-intel blocklist: CIDR groups behind one deny policy, or inline, always valid."""

from pathlib import Path

import pytest
from qcdr_common.contracts.intel.v1 import BlockedCidr, FeedSummary, IntelBlocklist
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.policies.targets import CiliumTarget
from qcdr_response.policies.threat_intel import IntelFormat, IntelPolicyConfig, threat_intel_documents
from qcdr_response.policies.validator_cilium import validate_cilium_policy


def _blocklist(n: int, dropped: int = 0) -> IntelBlocklist:
    cidrs = [
        BlockedCidr(
            cidr=f"45.{i // 256}.{i % 256}.0/24",
            feeds=("feodo-c2",) if i % 2 else ("tor-exit", "cins"),
            confidence=1 + i % 3,
        )
        for i in range(n)
    ]
    cidrs.append(BlockedCidr(cidr="2a01:4f8::/32", feeds=("spamhaus-drop",), confidence=1))
    return IntelBlocklist(
        cidrs=cidrs,
        feeds=[
            FeedSummary(name="feodo-c2", category="c2", status="fresh", ips=n // 2),
            FeedSummary(name="tor-exit", category="tor", status="stale", ips=n // 2),
        ],
        input_ips=n,
        dropped_indicators=dropped,
        dropped_cidrs=dropped,
        max_cidrs=n + 1 if dropped else None,
    )


def test_groups_are_sharded_and_referenced() -> None:
    docs = threat_intel_documents(_blocklist(2500), IntelPolicyConfig(group_size=1000))
    kinds = [d.kind for d in docs]
    assert kinds == ["CiliumCIDRGroup"] * 3 + ["CiliumClusterwideNetworkPolicy"]
    groups, policy = docs[:3], docs[3].body
    assert [len(g.body["spec"]["externalCIDRs"]) for g in groups] == [1000, 1000, 501]
    assert policy["spec"]["egressDeny"] == [{"toCIDRSet": [{"cidrGroupRef": g.name} for g in groups]}]
    assert policy["spec"]["enableDefaultDeny"] == {"egress": False, "ingress": False}
    assert groups[0].body["metadata"]["labels"]["feeds.qcdr.io/feodo-c2"] == "500"
    assert policy["metadata"]["labels"]["qcdr.io/pipeline"] == "threat-intel"
    assert {d.filename for d in docs} == {"threat-intel-blocklist.yaml"}


@pytest.mark.parametrize(
    ("cilium", "api_version"),
    [("1.16", "cilium.io/v2alpha1"), ("1.17", "cilium.io/v2alpha1"), ("1.18", "cilium.io/v2")],
)
def test_group_api_version_follows_the_target(cilium: str, api_version: str) -> None:
    docs = threat_intel_documents(_blocklist(3), IntelPolicyConfig(cilium_version=cilium))
    assert docs[0].body["apiVersion"] == api_version


def test_inline_format_shards_policies() -> None:
    docs = threat_intel_documents(
        _blocklist(2500), IntelPolicyConfig(format=IntelFormat.INLINE, group_size=1000)
    )
    assert [d.kind for d in docs] == ["CiliumClusterwideNetworkPolicy"] * 3
    assert [d.name for d in docs] == [f"threat-intel-blocklist-00{i}" for i in range(3)]
    total = sum(len(d.body["spec"]["egressDeny"][0]["toCIDRSet"]) for d in docs)
    assert total == 2501


def test_size_limit_is_stated() -> None:
    docs = threat_intel_documents(_blocklist(10, dropped=7), IntelPolicyConfig())
    note = docs[-1].body["metadata"]["annotations"]["qcdr.io/dropped-by-size-limit"]
    assert note.startswith("7 indicators")


def test_empty_blocklist_makes_no_documents() -> None:
    assert threat_intel_documents(IntelBlocklist(cidrs=[]), IntelPolicyConfig()) == []


@pytest.mark.shared
@pytest.mark.parametrize("fmt", list(IntelFormat))
@pytest.mark.parametrize("cilium", ["1.17", "1.18"])
def test_output_validates(fmt: IntelFormat, cilium: str, shared_path: Path) -> None:
    validator = ManifestValidator(shared_path)
    for doc in threat_intel_documents(
        _blocklist(1200), IntelPolicyConfig(format=fmt, group_size=500, cilium_version=cilium)
    ):
        assert validator.errors(doc.body) == []
        issues = validate_cilium_policy(doc.body, CiliumTarget(version=cilium))
        assert [i for i in issues if i.severity == "error"] == []
