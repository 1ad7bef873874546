"""Cilium policy validation: deny-rule semantics that silently cut traffic, CIDRs, ports, scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from qcdr_response.policies.targets import CiliumTarget
from qcdr_response.policies.validator import CiliumCode as C
from qcdr_response.policies.validator import PolicyIssue, errors
from qcdr_response.policies.validator_cilium import validate_cilium_policy

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT = CiliumTarget()  # 1.17


def load_all(name: str) -> list[dict[str, Any]]:
    return [dict(d) for d in yaml.safe_load_all((FIXTURES / name).read_text())]


def make_blocklist(**spec: Any) -> dict[str, Any]:
    """A valid cluster-wide egress blocklist; spec keys can be replaced."""
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "qcdr-blocklist"},
        "spec": {
            "endpointSelector": {},
            "enableDefaultDeny": {"egress": False},
            "egressDeny": [{"toCIDR": ["203.0.113.7/32"]}],
            **spec,
        },
    }


def codes(issues: list[PolicyIssue]) -> set[str]:
    return {i.code for i in errors(issues)}


REJECTED = [
    (
        "cilium-tofqdns-in-egressdeny.yaml",
        C.DENY_FIELD,
        "toFQDNs is not part of Cilium's deny rules",
    ),  # §14.27
    (
        "cilium-egressdeny-without-default-deny.yaml",
        C.DEFAULT_DENY,
        "silently dropping all their other egress",
    ),
    ("cilium-port-only-deny.yaml", C.PORT_ONLY_DENY, "towards every destination"),
    ("cilium-ipv6-slash32.yaml", C.CIDR, "an IPv6 /32 covers a whole provider allocation"),  # §14.26
    ("cilium-label-timestamp.yaml", C.LABELS, "'2026-12-04T16:30:00.123456' may only contain"),  # §14.29
]


@pytest.mark.parametrize(("fixture", "code", "fragment"), REJECTED, ids=[r[0] for r in REJECTED])
def test_original_invalid_shapes_are_rejected(fixture: str, code: str, fragment: str) -> None:
    (body,) = load_all(f"rejected/{fixture}")
    found = errors(validate_cilium_policy(body, DEFAULT))
    assert any(i.code == code and fragment in i.message for i in found), found


def test_cidr_group_blocklist_is_clean() -> None:
    documents = load_all("accepted/cilium-cidr-group-blocklist.yaml")
    assert [validate_cilium_policy(d, DEFAULT) for d in documents] == [[], []]


def test_minimal_blocklist_is_clean() -> None:
    assert validate_cilium_policy(make_blocklist(), DEFAULT) == []


def test_ingress_deny_needs_its_own_opt_out() -> None:
    body = make_blocklist(ingressDeny=[{"fromCIDR": ["198.51.100.0/24"]}])
    (issue,) = errors(validate_cilium_policy(body, DEFAULT))
    assert issue.code == C.DEFAULT_DENY
    assert issue.path == "spec.enableDefaultDeny.ingress"


def test_deny_next_to_allow_rules_is_an_explicit_allow_list() -> None:
    body = make_blocklist(egress=[{"toEntities": ["cluster"]}])
    del body["spec"]["enableDefaultDeny"]
    issues = validate_cilium_policy(body, DEFAULT)
    assert errors(issues) == []
    assert [i.code for i in issues] == [C.DEFAULT_DENY]  # a warning asking to say so explicitly


@pytest.mark.parametrize(
    ("rule", "ok"),
    [
        ({"toEntities": ["world"], "toPorts": [{"ports": [{"port": "4444", "protocol": "TCP"}]}]}, True),
        ({"toCIDR": ["0.0.0.0/0"], "toPorts": [{"ports": [{"port": "4444"}]}]}, True),
        ({"toEntities": ["cluster"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}, False),
        ({"toEndpoints": [{}], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}, False),
    ],
    ids=["world peer", "cidr peer", "cluster peer", "every endpoint"],
)
def test_port_deny_needs_an_external_peer(rule: dict[str, Any], ok: bool) -> None:
    found = codes(validate_cilium_policy(make_blocklist(egressDeny=[rule]), DEFAULT))
    assert (C.PORT_ONLY_DENY not in found) is ok


def test_l7_rules_are_not_allowed_in_deny() -> None:
    rule = {"toEntities": ["world"], "toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{}]}}]}
    assert C.DENY_FIELD in codes(validate_cilium_policy(make_blocklist(egressDeny=[rule]), DEFAULT))


@pytest.mark.parametrize(
    ("cidr", "fragment"),
    [
        ("10.0.0.1/8", "not canonical"),
        ("203.0.113.7", "not a CIDR"),
        ("300.0.0.0/8", "not a valid CIDR"),
        ("2001:db8::1/32", "IPv6 /32"),
    ],
)
def test_cidrs_must_be_valid_and_canonical(cidr: str, fragment: str) -> None:
    body = make_blocklist(egressDeny=[{"toCIDR": [cidr]}])
    assert any(fragment in i.message for i in errors(validate_cilium_policy(body, DEFAULT)))


def test_cidr_set_except_must_be_inside() -> None:
    rule = {"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16", "10.1.0.0/16"]}]}
    found = errors(validate_cilium_policy(make_blocklist(egressDeny=[rule]), DEFAULT))
    assert [i.path for i in found] == ["spec.egressDeny[0].toCIDRSet[0].except[0]"]


@pytest.mark.parametrize(
    ("ports", "fragment"),
    [
        ([{"port": "0"}], "outside 1-65535"),
        ([{"port": "70000"}], "outside 1-65535"),
        ([{"port": 443}], "must be a string"),
        ([{"port": "53", "protocol": "ICMP"}], "protocol"),
        ([{"port": "\xb2", "endPort": 100}], "endPort must be an integer"),  # '²'.isdigit(): int() raised
        ([{"port": str(p)} for p in range(1000, 1041)], "at most 40"),
    ],
)
def test_port_rules(ports: list[dict[str, Any]], fragment: str) -> None:
    rule = {"toEntities": ["world"], "toPorts": [{"ports": ports}]}
    found = errors(validate_cilium_policy(make_blocklist(egressDeny=[rule]), DEFAULT))
    assert any(i.code == C.PORTS and fragment in i.message for i in found), found


def test_namespace_scope_matches_the_kind() -> None:
    namespaced = make_blocklist()
    namespaced["kind"] = "CiliumNetworkPolicy"
    assert C.SCOPE in codes(validate_cilium_policy(namespaced, DEFAULT))
    namespaced["metadata"]["namespace"] = "payments"
    assert validate_cilium_policy(namespaced, DEFAULT) == []
    clusterwide = make_blocklist()
    clusterwide["metadata"]["namespace"] = "payments"
    assert C.SCOPE in codes(validate_cilium_policy(clusterwide, DEFAULT))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "qcdr-blocklist\n"),
        ("namespace", "payments\n"),
        ("labels", {"app\n": "x"}),
        ("labels", {"app": "x\n"}),
    ],
)
def test_a_trailing_newline_is_not_a_valid_name(field: str, value: Any) -> None:
    """A $-anchored re.match also matches before a final newline: the API server refuses such
    names, so the validator must too (it is the last check before a manifest is applied)."""
    body = make_blocklist()
    body["kind"] = "CiliumNetworkPolicy"
    body["metadata"] = {"name": "qcdr-blocklist", "namespace": "payments", field: value}
    assert codes(validate_cilium_policy(body, DEFAULT)) & {C.NAME, C.SCOPE, C.LABELS}


def test_selectors_are_required_and_exclusive() -> None:
    body = make_blocklist()
    del body["spec"]["endpointSelector"]
    assert C.SELECTOR in codes(validate_cilium_policy(body, DEFAULT))
    body = make_blocklist(nodeSelector={})
    assert C.SELECTOR in codes(validate_cilium_policy(body, DEFAULT))


def test_multi_rule_specs_are_each_checked() -> None:
    body = make_blocklist()
    rule = dict(body.pop("spec"))
    bad = {"endpointSelector": {}, "egressDeny": [{"toCIDR": ["198.51.100.0/24"]}]}
    body["specs"] = [rule, bad]
    (issue,) = errors(validate_cilium_policy(body, DEFAULT))
    assert issue.path == "specs[1].enableDefaultDeny.egress"


def test_cidr_group_versions_and_shape() -> None:
    group = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumCIDRGroup",
        "metadata": {"name": "qcdr-threat-intel-0"},
        "spec": {"externalCIDRs": ["203.0.113.7/32"], "cidrs": []},
    }
    found = codes(validate_cilium_policy(group, DEFAULT))
    assert {C.VERSION, C.STRUCTURE} <= found
    assert C.VERSION not in codes(validate_cilium_policy(group, CiliumTarget("1.18")))


def test_oversized_objects_are_refused() -> None:
    cidrs = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32" for i in range(100_000)]
    body = make_blocklist(egressDeny=[{"toCIDR": cidrs}])
    assert C.SIZE in codes(validate_cilium_policy(body, DEFAULT))


def test_cilium_before_116_is_refused() -> None:
    with pytest.raises(ValueError, match="enableDefaultDeny"):
        CiliumTarget("1.15")
