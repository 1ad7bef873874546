"""Writing and applying a feed-driven pipeline's documents (resolve-and-deny, the threat-intel
blocklist): one file with the pipeline's own first line, and server-side apply that prunes only
that pipeline's objects.

These pipelines follow their data (DNS answers, the feeds), not a review per version, so they do
not go through the policy lifecycle; the file's header differs from the lifecycle's, whose file
sync removes only files carrying its own, and pruning selects the pipeline's label as well as
qcdr's managed-by label, so neither ever removes what the other made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qcdr_common.contracts.policies.v1 import PolicyDocument, dump_yaml

from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.policies.apply import DEFAULT_MANAGED_KINDS, apply_documents
from qcdr_response.policies.files import write_files

# the pipelines' objects are all clusterwide (CIDR groups, clusterwide policies, TracingPolicy)
CLUSTERWIDE_KINDS = tuple(k for k in DEFAULT_MANAGED_KINDS if not k.namespaced)


@dataclass
class Delivery:
    file: str | None = None
    applied: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


async def deliver(
    docs: Sequence[PolicyDocument],
    *,
    output_dir: Path | None,
    filename: str,
    header: str,
    cluster: ClusterGateway | None,
    selector: Mapping[str, str],
) -> Delivery:
    """Write ``<output_dir>/<filename>`` (when a directory is given) and, with a cluster, apply the
    documents and prune the pipeline's objects no longer among them."""
    out = Delivery()
    if output_dir is not None:
        content = header + "---\n".join(dump_yaml(d.body) for d in docs)
        # only this file, written when it changed; never a prune of the lifecycle's files
        await asyncio.to_thread(write_files, output_dir, {filename: content}, prune=False)
        out.file = str(output_dir / filename)
    if cluster is None:
        return out
    report = await apply_documents(
        list(docs),
        cluster.client(),
        field_manager=cluster.field_manager,
        managed_selector=selector,
        managed_kinds=CLUSTERWIDE_KINDS,
        prune=True,
    )
    out.applied = {
        "created": [str(r) for r in report.created],
        "configured": [str(r) for r in report.configured],
        "unchanged": [str(r) for r in report.unchanged],
        "pruned": [str(r) for r in report.pruned],
        "failed": [f"{f.ref}: {f.message}" for f in report.failed],
    }
    out.warnings.extend(report.warnings)
    if report.failed:
        out.error = f"apply: {len(report.failed)} object(s) failed: {report.failed[0].message}"
    return out
