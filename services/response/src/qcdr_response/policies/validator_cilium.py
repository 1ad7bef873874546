"""Validate CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy / CiliumCIDRGroup manifests.

Beyond the CRD schema this checks the two semantics that turn a blocklist into an outage:
deny rules switch the selected endpoints to default-deny unless the policy opts out, and a
port-only deny rule applies to every destination (cluster services included).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from qcdr_response.policies import targets as tg
from qcdr_response.policies.targets import CiliumTarget
from qcdr_response.policies.validator import CiliumCode as C
from qcdr_response.policies.validator import (
    Issues,
    PolicyIssue,
    as_list,
    as_map,
    check_label_selector,
    check_metadata,
    selector_is_empty,
)

POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
CIDR_GROUP_KIND = "CiliumCIDRGroup"
MAX_PORTS = 40  # CRD maxItems of a toPorts[].ports list
MAX_OBJECT_BYTES = 1_500_000  # etcd's default request limit (1.5 MiB)
MAX_LOG_VALUE = 32
PROTOCOLS = frozenset({"TCP", "UDP", "SCTP", "ANY"})
# The CRD's entity enum (world-ipv4/world-ipv6 are agent-side only and rejected by the schema).
ENTITIES = frozenset(
    {"all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health", "none",
     "kube-apiserver"}
)  # fmt: skip
# The entity that stands for "outside the cluster": a port denied only towards it is safe.
EXTERNAL_ENTITIES = frozenset({"world"})
RULE_SPEC_FIELDS = frozenset(
    {"description", "egress", "egressDeny", "enableDefaultDeny", "endpointSelector", "ingress",
     "ingressDeny", "labels", "log", "nodeSelector"}
)  # fmt: skip
_PEERS = {
    "egress": (
        "toEndpoints",
        "toRequires",
        "toCIDR",
        "toCIDRSet",
        "toEntities",
        "toServices",
        "toGroups",
        "toNodes",
    ),
    "ingress": (
        "fromEndpoints",
        "fromRequires",
        "fromCIDR",
        "fromCIDRSet",
        "fromEntities",
        "fromGroups",
        "fromNodes",
    ),
}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ALLOW_ONLY = {"egress": ("toFQDNs", "authentication"), "ingress": ("authentication",)}


def validate_cilium_policy(body: dict[str, Any], target: CiliumTarget) -> list[PolicyIssue]:
    """All problems of one Cilium manifest for ``target``; errors mean "do not apply"."""
    issues = Issues()
    if not isinstance(body, dict):
        issues.error("", C.STRUCTURE, "a Cilium manifest must be a map")
        return issues.items
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    if kind == CIDR_GROUP_KIND:
        if api_version not in ("cilium.io/v2", "cilium.io/v2alpha1"):
            issues.error(
                "apiVersion", C.KIND, "CiliumCIDRGroup apiVersion must be cilium.io/v2 or cilium.io/v2alpha1"
            )
        elif api_version == "cilium.io/v2" and target.lacks(tg.CILIUM_CIDR_GROUP_V2):
            issues.error(
                "apiVersion",
                C.VERSION,
                f"CiliumCIDRGroup cilium.io/v2 needs Cilium >= {tg.fmt(tg.CILIUM_CIDR_GROUP_V2)} "
                "(assumed; use cilium.io/v2alpha1 before)",
            )
    elif kind in POLICY_KINDS:
        if api_version != "cilium.io/v2":
            issues.error("apiVersion", C.KIND, f"{kind} apiVersion must be cilium.io/v2")
    else:
        issues.error("kind", C.KIND, f"kind must be one of {(*POLICY_KINDS, CIDR_GROUP_KIND)} (got {kind!r})")
        return issues.items
    check_metadata(
        body.get("metadata"),
        issues,
        codes={"name": C.NAME, "labels": C.LABELS, "namespace": C.SCOPE},
        namespaced=kind == "CiliumNetworkPolicy",
        kind=str(kind),
    )
    if kind == CIDR_GROUP_KIND:
        _check_cidr_group(body, issues)
    else:
        _check_policy(body, str(kind), issues, target)
    size = len(json.dumps(body, default=str))
    if size > MAX_OBJECT_BYTES:
        issues.error(
            "",
            C.SIZE,
            f"{size} bytes: over etcd's 1.5 MiB request limit; shard it (e.g. several CIDR groups)",
        )
    return issues.items


def _check_cidr_group(body: dict[str, Any], issues: Issues) -> None:
    spec = as_map(body.get("spec"))
    if spec is None:
        issues.error("spec", C.STRUCTURE, "spec must be a map with externalCIDRs")
        return
    for key in spec:
        if key != "externalCIDRs":
            issues.error(
                f"spec.{key}", C.STRUCTURE, f"unknown field {key!r} (a CIDR group only has externalCIDRs)"
            )
    cidrs = as_list(spec.get("externalCIDRs"))
    if cidrs is None:
        issues.error("spec.externalCIDRs", C.STRUCTURE, "externalCIDRs must be a list of CIDRs")
        return
    for i, cidr in enumerate(cidrs):
        _check_cidr(cidr, f"spec.externalCIDRs[{i}]", issues, deny=True)


def _check_policy(body: dict[str, Any], kind: str, issues: Issues, target: CiliumTarget) -> None:
    rules: list[tuple[str, dict[str, Any]]] = []
    if "spec" in body:
        spec = as_map(body["spec"])
        if spec is None:
            issues.error("spec", C.STRUCTURE, "spec must be a map")
        else:
            rules.append(("spec", spec))
    if "specs" in body:
        for i, spec in enumerate(as_list(body["specs"]) or []):
            if as_map(spec) is None:
                issues.error(f"specs[{i}]", C.STRUCTURE, "each entry of specs must be a map")
            else:
                rules.append((f"specs[{i}]", spec))
    if not rules:
        issues.error("spec", C.STRUCTURE, f"{kind} needs a spec (or specs)")
    for path, rule in rules:
        _check_rule(rule, kind, path, issues, target)


def _check_rule(rule: dict[str, Any], kind: str, path: str, issues: Issues, target: CiliumTarget) -> None:
    for key in rule:
        if key not in RULE_SPEC_FIELDS:
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown field {key!r} in a policy rule")
    has_endpoints = "endpointSelector" in rule
    has_nodes = "nodeSelector" in rule
    if has_endpoints == has_nodes:
        issues.error(path, C.SELECTOR, "set exactly one of endpointSelector and nodeSelector")
    if has_nodes and kind == "CiliumNetworkPolicy":
        issues.error(
            f"{path}.nodeSelector", C.SELECTOR, "nodeSelector (host policies) is only valid in a CCNP"
        )
    for key in ("endpointSelector", "nodeSelector"):
        check_label_selector(rule.get(key), f"{path}.{key}", issues, C.SELECTOR, strict_keys=False)
    directions = [d for d in ("ingress", "ingressDeny", "egress", "egressDeny") if rule.get(d)]
    if not directions:
        issues.error(
            path, C.STRUCTURE, "a rule needs at least one of ingress, ingressDeny, egress, egressDeny"
        )
    log = as_map(rule.get("log"))
    if log is not None:
        if target.lacks(tg.CILIUM_LOG_FIELD):
            issues.error(
                f"{path}.log", C.VERSION, f"log needs Cilium >= {tg.fmt(tg.CILIUM_LOG_FIELD)} (assumed)"
            )
        if len(str(log.get("value", ""))) > MAX_LOG_VALUE:
            issues.error(
                f"{path}.log.value", C.STRUCTURE, f"log.value is limited to {MAX_LOG_VALUE} characters"
            )
    default_deny = as_map(rule.get("enableDefaultDeny")) or {}
    for direction in ("egress", "ingress"):
        allow = as_list(rule.get(direction)) or []
        deny = as_list(rule.get(f"{direction}Deny")) or []
        for i, entry in enumerate(allow):
            _check_peer_rule(entry, direction, False, f"{path}.{direction}[{i}]", issues, target)
        for i, entry in enumerate(deny):
            _check_peer_rule(entry, direction, True, f"{path}.{direction}Deny[{i}]", issues, target)
        if deny:
            _check_default_deny(default_deny.get(direction), direction, bool(allow), path, issues)


def _check_default_deny(value: Any, direction: str, has_allow: bool, path: str, issues: Issues) -> None:
    if value is False:
        return
    where = f"{path}.enableDefaultDeny.{direction}"
    if not has_allow:
        issues.error(
            where,
            C.DEFAULT_DENY,
            f"a policy with {direction}Deny rules puts the selected endpoints into {direction} "
            f"default-deny, silently dropping all their other {direction} traffic: set "
            f"enableDefaultDeny: {{{direction}: false}} (Cilium >= 1.16)",
        )
    elif value is None:
        issues.warn(
            where,
            C.DEFAULT_DENY,
            f"this rule also has {direction} allow rules, so {direction} is default-deny (an allow-list); "
            f"say so explicitly with enableDefaultDeny.{direction}: true, or false if that is not meant",
        )


def _check_peer_rule(
    raw: Any, direction: str, deny: bool, path: str, issues: Issues, target: CiliumTarget
) -> None:
    entry = as_map(raw)
    if entry is None:
        issues.error(path, C.STRUCTURE, "each rule must be a map")
        return
    peers = _PEERS[direction]
    allowed = {*peers, "toPorts", "icmps"} if deny else {*peers, "toPorts", "icmps", *_ALLOW_ONLY[direction]}
    for key in entry:
        if key in _ALLOW_ONLY[direction] and deny:
            reason = (
                "toFQDNs is not part of Cilium's deny rules (only L3 peers, toPorts and icmps): the API "
                "server rejects it or prunes it, and the rule stops meaning what was intended; block "
                "domains with a DNS allow-list, resolved CIDRs or a Tetragon hook instead"
                if key == "toFQDNs"
                else f"{key} is not allowed in deny rules"
            )
            issues.error(f"{path}.{key}", C.DENY_FIELD, reason)
        elif key not in allowed:
            issues.error(f"{path}.{key}", C.STRUCTURE, f"unknown field {key!r} in a {direction} rule")
    prefix = "to" if direction == "egress" else "from"
    for i, cidr in enumerate(as_list(entry.get(f"{prefix}CIDR")) or []):
        _check_cidr(cidr, f"{path}.{prefix}CIDR[{i}]", issues, deny=deny)
    for i, item in enumerate(as_list(entry.get(f"{prefix}CIDRSet")) or []):
        _check_cidr_set(item, f"{path}.{prefix}CIDRSet[{i}]", issues, deny, target)
    for i, entity in enumerate(as_list(entry.get(f"{prefix}Entities")) or []):
        if entity not in ENTITIES:
            issues.error(f"{path}.{prefix}Entities[{i}]", C.STRUCTURE, f"{entity!r} is not a Cilium entity")
    for i, port_rule in enumerate(as_list(entry.get("toPorts")) or []):
        _check_port_rule(port_rule, f"{path}.toPorts[{i}]", issues, deny)
    if deny:
        _check_deny_peers(entry, peers, prefix, path, issues)


def _check_deny_peers(
    entry: dict[str, Any], peers: tuple[str, ...], prefix: str, path: str, issues: Issues
) -> None:
    present = [p for p in peers if entry.get(p)]
    if not present:
        if entry.get("toPorts") or entry.get("icmps"):
            issues.error(
                path,
                C.PORT_ONLY_DENY,
                "a deny rule with ports but no peer denies those ports towards every destination, "
                f"cluster services and DNS included; add a peer such as {prefix}Entities: [world] or a CIDR",
            )
        elif not any(key in entry for key in ("toFQDNs", "authentication")):  # reported already
            issues.error(path, C.STRUCTURE, "a deny rule without peers or ports matches nothing")
        return
    if not entry.get("toPorts"):
        return
    entities = set(as_list(entry.get(f"{prefix}Entities")) or [])
    only_broad = all(
        (p == f"{prefix}Entities" and not entities & EXTERNAL_ENTITIES)
        or (p == f"{prefix}Endpoints" and all(selector_is_empty(s) for s in as_list(entry.get(p)) or []))
        for p in present
    )
    if only_broad:
        issues.error(
            path,
            C.PORT_ONLY_DENY,
            "these ports are denied towards every in-cluster destination (the peers select everything); "
            f"restrict the peer to {prefix}Entities: [world] or specific CIDRs",
        )


def _check_cidr_set(raw: Any, path: str, issues: Issues, deny: bool, target: CiliumTarget) -> None:
    item = as_map(raw)
    if item is None:
        issues.error(path, C.STRUCTURE, "each CIDR set entry must be a map")
        return
    sources = [k for k in ("cidr", "cidrGroupRef", "cidrGroupSelector") if k in item]
    if len(sources) != 1:
        issues.error(path, C.STRUCTURE, "set exactly one of cidr, cidrGroupRef and cidrGroupSelector")
    if "cidrGroupSelector" in item:
        if target.lacks(tg.CILIUM_CIDR_GROUP_SELECTOR):
            issues.error(
                f"{path}.cidrGroupSelector",
                C.VERSION,
                f"cidrGroupSelector needs Cilium >= {tg.fmt(tg.CILIUM_CIDR_GROUP_SELECTOR)}",
            )
        check_label_selector(item["cidrGroupSelector"], f"{path}.cidrGroupSelector", issues, C.SELECTOR)
    parent = _check_cidr(item["cidr"], f"{path}.cidr", issues, deny=deny) if "cidr" in item else None
    for i, excluded in enumerate(as_list(item.get("except")) or []):
        network = _check_cidr(excluded, f"{path}.except[{i}]", issues, deny=False)
        if parent is not None and network is not None and not _within(network, parent):
            issues.error(f"{path}.except[{i}]", C.CIDR, f"{excluded} is not inside {parent}")


def _within(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def _check_cidr(value: Any, path: str, issues: Issues, *, deny: bool) -> Network | None:
    if not isinstance(value, str) or "/" not in value:
        issues.error(path, C.CIDR, f"{value!r} is not a CIDR (write a prefix length, e.g. 192.0.2.1/32)")
        return None
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        issues.error(path, C.CIDR, f"{value!r} is not a valid CIDR")
        return None
    if str(loose) != value:
        hint = ""
        if loose.version == 6 and loose.prefixlen == 32:
            # The original's mistake: an IPv6 address with "/32" appended, as if it were IPv4.
            hint = (
                " (an IPv6 /32 covers a whole provider allocation, 2^96 addresses; use /128 for one address)"
            )
        issues.error(
            path,
            C.CIDR,
            f"{value!r} is not canonical (host bits set or non-normal form): write {loose}{hint}",
        )
    if loose.version == 6 and loose.prefixlen == 32 and str(loose) == value:
        # A canonical v6 /32 is a real allocation (Spamhaus DROPv6 lists some): allowed, but said.
        issues.warn(path, C.CIDR, f"{value!r} denies a whole IPv6 provider allocation (2^96 addresses)")
    if deny and loose.prefixlen == 0:
        issues.warn(path, C.CIDR, f"{value!r} denies every address of the family")
    return loose


def _check_port_rule(raw: Any, path: str, issues: Issues, deny: bool) -> None:
    rule = as_map(raw)
    if rule is None:
        issues.error(path, C.STRUCTURE, "each toPorts entry must be a map")
        return
    for key in rule:
        if key == "ports":
            continue
        if deny:
            issues.error(
                f"{path}.{key}",
                C.DENY_FIELD,
                f"{key} is not allowed in a deny rule (no L7 rules, TLS or listeners: deny is L3/L4 only)",
            )
    ports = as_list(rule.get("ports"))
    if ports is None:
        issues.error(f"{path}.ports", C.PORTS, "ports must be a list")
        return
    if len(ports) > MAX_PORTS:
        issues.error(f"{path}.ports", C.PORTS, f"{len(ports)} ports: at most {MAX_PORTS} per toPorts entry")
    for i, raw_port in enumerate(ports):
        _check_port(raw_port, f"{path}.ports[{i}]", issues)


def _check_port(raw: Any, path: str, issues: Issues) -> None:
    port = as_map(raw)
    if port is None:
        issues.error(path, C.PORTS, "each port must be a map with port and protocol")
        return
    number = port.get("port")
    if not isinstance(number, str):
        issues.error(path, C.PORTS, f"port {number!r} must be a string (quote it in YAML)")
    elif number.isascii() and number.isdigit():  # "²".isdigit() is true too, and int("²") raises
        if not 1 <= int(number) <= 65535:
            issues.error(path, C.PORTS, f"port {number} is outside 1-65535 (0 would mean every port)")
    else:
        issues.warn(path, C.PORTS, f"named port {number!r} depends on the selected pods' container ports")
    protocol = port.get("protocol", "ANY")
    if protocol not in PROTOCOLS:
        issues.error(path, C.PORTS, f"protocol {protocol!r} must be one of {sorted(PROTOCOLS)}")
    end = port.get("endPort")
    if end is not None and not (
        isinstance(end, int)
        and isinstance(number, str)
        and number.isascii()
        and number.isdigit()
        and int(number) <= end <= 65535
    ):
        issues.error(path, C.PORTS, "endPort must be an integer between port and 65535")
