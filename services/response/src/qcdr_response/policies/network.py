"""Network blocklists from IOCs: a Cilium clusterwide deny policy and a Tetragon connect policy.

- ``qualys-cdr-blocklist.yaml``: a CiliumClusterwideNetworkPolicy. ``egressDeny`` with
  ``toCIDRSet`` for the IPs, and port denies only towards ``toEntities: [world]`` (a bare port
  deny would hit every in-cluster service on that port). ``enableDefaultDeny`` is off in both
  directions: without it an egressDeny-only policy puts every selected pod into egress
  default-deny. Cilium has no FQDN *deny*, so domains stay data here (``iocs.json``); resolve-and-deny
  (``--dns-resolve-deny``) denies their addresses.
- ``cdr-dynamic-blocklist.yaml``: a TracingPolicy on ``tcp_connect`` (``sock`` ``DAddr``/``DPort``)
  for the same indicators, for clusters where Tetragon enforces but Cilium is not the CNI.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.policies.v1 import PolicyDocument, TargetVersions

from qcdr_response.policies import metadata as md
from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.config import EnforcementAction, GenerationConfig, OverrideHooks
from qcdr_response.policies.iocs import IocSet

CILIUM_FILE = "qualys-cdr-blocklist.yaml"
CILIUM_NAME = "qualys-cdr-blocklist"
TRACING_FILE = "cdr-dynamic-blocklist.yaml"
TRACING_NAME = "cdr-dynamic-blocklist"
GENERATOR = "cdr-iocs"
FAMILY = "network-iocs"


def _cidr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}"))


def _common_meta(
    iocs: IocSet, config: GenerationConfig, description: str, action: str
) -> tuple[dict[str, str], dict[str, str]]:
    ids, omitted = md.bounded_list(sorted(iocs.source_ids), config.max_source_ids)
    lbls = md.policy_labels(
        generator=GENERATOR, family=FAMILY, severity=Severity.HIGH, action=action, technique=None
    )
    annos = {
        f"{md.PREFIX}/description": description,
        f"{md.PREFIX}/finding-count": str(len(iocs.source_ids)),
        f"{md.PREFIX}/blocked-ips": str(len(iocs.ips)),
        f"{md.PREFIX}/blocked-ports": ",".join(str(p) for p in sorted(iocs.ports)),
        f"{md.PREFIX}/source-ids": ids,
        f"{md.PREFIX}/generated-date": config.run_date.isoformat(),
    }
    if omitted:
        annos[f"{md.PREFIX}/source-ids-omitted"] = str(omitted)
    return lbls, dict(sorted(annos.items()))


def cilium_blocklist(iocs: IocSet, config: GenerationConfig) -> PolicyDocument | None:
    if not iocs.ips and not iocs.ports:
        return None
    rules: list[dict[str, Any]] = []
    if iocs.ips:
        rules.append({"toCIDRSet": [{"cidr": _cidr(ip)} for ip in iocs.sorted_ips()]})
    ports = sorted(iocs.ports)
    # Cilium caps a rule's port list at 40 entries.
    for part in tg.chunked(ports, 20):
        rules.append(
            {
                "toEntities": ["world"],
                "toPorts": [
                    {"ports": [{"port": str(p), "protocol": proto} for p in part for proto in ("TCP", "UDP")]}
                ],
            }
        )
    description = (
        f"qcdr: deny egress to {len(iocs.ips)} IPs and {len(ports)} ports (towards the internet) "
        "seen as destinations in Qualys CDR findings"
    )
    lbls, annos = _common_meta(iocs, config, description, "deny")
    body = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": md.object_meta(CILIUM_NAME, None, lbls, annos),
        "spec": {
            "description": description,
            "endpointSelector": {},
            "enableDefaultDeny": {"egress": False, "ingress": False},
            "egressDeny": rules,
        },
    }
    return PolicyDocument(
        family=FAMILY,
        filename=CILIUM_FILE,
        body=body,
        source_ids=sorted(iocs.source_ids),
        finding_count=len(iocs.source_ids),
        targets=TargetVersions(tetragon=config.tetragon_version, cilium=config.cilium_version),
    )


def tracing_blocklist(iocs: IocSet, config: GenerationConfig) -> list[PolicyDocument]:
    if not iocs.ips and not iocs.ports:
        return []
    cidrs = [_cidr(ip) for ip in iocs.sorted_ips()]
    ports = sorted(iocs.ports)
    override = config.action is EnforcementAction.OVERRIDE
    main_action = tg.actions("Post" if override else config.action.value)
    selectors = []
    if cidrs:
        selectors.append(tg.selector(match_args=[tg.match_arg(0, "DAddr", cidrs)], action=main_action))
    # At most 16 suspicious ports (GenerationConfig), so with the address selector this fits 5 selectors.
    selectors += tg.internet_port_selectors(ports, main_action)
    docs = [
        _tracing_doc(
            TRACING_NAME,
            {"kprobes": [tg.tcp_connect_hook(selectors)]},
            iocs,
            config,
            "Post" if override else config.action.value,
        )
    ]
    if override and cidrs:
        # Override needs an error-injectable hook: the LSM connect hook, whose sockaddr target is "SAddr".
        hook = tg.socket_connect_hook(
            [tg.selector(match_args=[tg.match_arg(1, "SAddr", cidrs)], action=tg.actions("Override"))]
        )
        if config.override_hooks is OverrideHooks.LSM:
            lsm, _ = tg.as_lsm_hooks([hook])
            spec: dict[str, Any] = {"lsmhooks": lsm}
        else:
            spec = {"kprobes": [hook]}
        docs.append(_tracing_doc(f"{TRACING_NAME}-override", spec, iocs, config, "Override"))
    return docs


def _tracing_doc(
    name: str, spec: dict[str, Any], iocs: IocSet, config: GenerationConfig, action: str
) -> PolicyDocument:
    description = (
        f"qcdr: connects to {len(iocs.ips)} IOC IPs and {len(iocs.ports)} suspicious ports (internet)"
    )
    lbls, annos = _common_meta(iocs, config, description, action)
    body = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": md.object_meta(name, None, lbls, annos),
        "spec": spec,
    }
    return PolicyDocument(
        family=FAMILY,
        filename=TRACING_FILE,
        body=body,
        source_ids=sorted(iocs.source_ids),
        finding_count=len(iocs.source_ids),
        targets=TargetVersions(tetragon=config.tetragon_version, cilium=config.cilium_version),
    )
