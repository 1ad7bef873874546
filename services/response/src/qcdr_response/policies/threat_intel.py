"""``threat-intel-blocklist.yaml``: feed indicators as Cilium CIDR groups behind one deny policy.

Large, frequently changing blocklists belong in ``CiliumCIDRGroup`` objects: a group becomes one
identity (cheap for the policy map), and rotating its CIDRs updates one object instead of the
policy. The groups are sharded to a configurable size so no object nears etcd's request limit,
and a CiliumClusterwideNetworkPolicy denies egress to all of them (``toCIDRSet[].cidrGroupRef``),
with default-deny switched off so nothing else is cut. ``inline`` format writes the CIDRs straight
into ``toCIDRSet`` for clusters without CIDR groups.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.intel.v1 import BlockedCidr, IntelBlocklist
from qcdr_common.contracts.policies.v1 import PolicyDocument, TargetVersions

from qcdr_response.policies import metadata as md
from qcdr_response.policies import tetragon as tg
from qcdr_response.policies.targets import CILIUM_CIDR_GROUP_V2, CiliumTarget

FILENAME = "threat-intel-blocklist.yaml"
POLICY_NAME = "threat-intel-blocklist"
GROUP_PREFIX = "qcdr-threat-intel"
PIPELINE = "threat-intel"
SELECTOR = {**md.MANAGED_BY, md.PIPELINE_LABEL: PIPELINE}


class IntelFormat(StrEnum):
    GROUPS = "groups"
    INLINE = "inline"


class IntelPolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: IntelFormat = IntelFormat.GROUPS
    group_size: int = Field(default=5000, ge=1, le=50_000, description="CIDRs per CiliumCIDRGroup.")
    cilium_version: str = "1.17"
    tetragon_version: str = "1.5"


def cidr_group_api_version(cilium_version: str) -> str:
    target = CiliumTarget(version=cilium_version)
    return "cilium.io/v2alpha1" if target.lacks(CILIUM_CIDR_GROUP_V2) else "cilium.io/v2"


def _labels(feeds: dict[str, int]) -> dict[str, str]:
    out = md.policy_labels(
        generator="threat-intel",
        family="threat-intel",
        severity=Severity.HIGH,
        action="deny",
        technique=None,
        pipeline=PIPELINE,
    )
    # One label per feed with its count in this object, so `kubectl get -l feeds.qcdr.io/tor-exit`
    # finds every group that carries Tor exits.
    for feed, count in sorted(feeds.items()):
        out[f"feeds.qcdr.io/{feed}"] = str(count)
    return out


def _feed_counts(cidrs: list[BlockedCidr]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in cidrs:
        for feed in item.feeds:
            counts[feed] = counts.get(feed, 0) + 1
    return counts


def threat_intel_documents(blocklist: IntelBlocklist, config: IntelPolicyConfig) -> list[PolicyDocument]:
    if not blocklist.cidrs:
        return []
    targets = TargetVersions(tetragon=config.tetragon_version, cilium=config.cilium_version)
    shards = list(tg.chunked(blocklist.cidrs, config.group_size))
    if config.format is IntelFormat.INLINE:
        # Without CIDR groups the CIDRs go into the policies themselves, sharded the same way so
        # that no object nears the API server's request size limit.
        return [
            _policy(
                POLICY_NAME if len(shards) == 1 else f"{POLICY_NAME}-{index:03d}",
                [{"cidr": c.cidr} for c in shard],
                shard,
                blocklist,
                targets,
            )
            for index, shard in enumerate(shards)
        ]
    api_version = cidr_group_api_version(config.cilium_version)
    docs = []
    for index, shard in enumerate(shards):
        annotations = {
            f"{md.PREFIX}/cidr-count": str(len(shard)),
            f"{md.PREFIX}/shard": f"{index + 1}/{len(shards)}",
        }
        body = {
            "apiVersion": api_version,
            "kind": "CiliumCIDRGroup",
            "metadata": md.object_meta(_group_name(index), None, _labels(_feed_counts(shard)), annotations),
            "spec": {"externalCIDRs": [c.cidr for c in shard]},
        }
        docs.append(_document(body, len(shard), targets))
    peers = [{"cidrGroupRef": _group_name(i)} for i in range(len(shards))]
    docs.append(_policy(POLICY_NAME, peers, blocklist.cidrs, blocklist, targets))
    return docs


def _group_name(index: int) -> str:
    return f"{GROUP_PREFIX}-{index:03d}"


def _document(body: dict[str, Any], count: int, targets: TargetVersions) -> PolicyDocument:
    return PolicyDocument(
        family="threat-intel", filename=FILENAME, body=body, finding_count=count, targets=targets
    )


def _policy(
    name: str,
    peers: list[dict[str, Any]],
    cidrs: list[BlockedCidr],
    blocklist: IntelBlocklist,
    targets: TargetVersions,
) -> PolicyDocument:
    description = (
        f"qcdr: deny egress to {len(blocklist.cidrs)} threat-intel CIDRs from {len(blocklist.feeds)} feeds"
    )
    annotations = {
        f"{md.PREFIX}/description": description,
        f"{md.PREFIX}/feeds": ",".join(f"{f.name}={f.ips + f.cidrs}" for f in blocklist.feeds),
        f"{md.PREFIX}/cidr-count": str(len(cidrs)),
        f"{md.PREFIX}/input": f"{blocklist.input_ips} IPs and {blocklist.input_cidrs} CIDRs",
        f"{md.PREFIX}/excluded-never-block": str(blocklist.excluded_never_block),
    }
    if blocklist.dropped_indicators:
        annotations[f"{md.PREFIX}/dropped-by-size-limit"] = (
            f"{blocklist.dropped_indicators} indicators ({blocklist.dropped_cidrs} CIDRs) over the limit of "
            f"{blocklist.max_cidrs}"
        )
    body = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": md.object_meta(
            name, None, _labels(_feed_counts(cidrs)), dict(sorted(annotations.items()))
        ),
        "spec": {
            "description": description,
            "endpointSelector": {},
            # A deny-only policy must not put every pod into egress default-deny.
            "enableDefaultDeny": {"egress": False, "ingress": False},
            "egressDeny": [{"toCIDRSet": peers}],
        },
    }
    return _document(body, len(cidrs), targets)
