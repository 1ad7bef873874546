"""``--apply``: server-side apply of the generated documents, then prune what qcdr no longer makes.

Each pipeline (the CDR policies; the threat-intel blocklist; the DNS resolve-and-deny policy) is
applied and pruned on its own, selected by its ``qcdr.io/pipeline`` label, and only when it ran: a
CDR-only run never touches the threat-intel or DNS objects, and a threat-intel run whose feeds all
failed leaves the cluster's last good blocklist alone rather than pruning it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_ingest.intel.model import FeedStatus
from qcdr_response.dns.resolve_deny import PIPELINE as DNS_PIPELINE
from qcdr_response.policies.apply import ApplyReport, KubeConfigError, apply_documents, load_client
from qcdr_response.policies.metadata import CDR_SELECTOR, MANAGED_BY, PIPELINE_LABEL
from qcdr_response.policies.threat_intel import SELECTOR as THREAT_INTEL_SELECTOR

if TYPE_CHECKING:
    from qcdr.pipeline import RunReport


# the objects the resolve-and-deny documents are labelled with (as the response service selects
# them, qcdr_response.dns.service.SELECTOR), so pruning stays within that pipeline
DNS_SELECTOR = {**MANAGED_BY, PIPELINE_LABEL: DNS_PIPELINE}


class ApplyError(RuntimeError):
    """The cluster could not be reached or configured; one line for the user."""


def _as_dict(reports: Sequence[ApplyReport], skipped: list[str]) -> dict[str, Any]:
    return {
        "created": [str(r) for rep in reports for r in rep.created],
        "configured": [str(r) for rep in reports for r in rep.configured],
        "unchanged": [str(r) for rep in reports for r in rep.unchanged],
        "pruned": [str(r) for rep in reports for r in rep.pruned],
        "failed": [str(f) for rep in reports for f in rep.failed],
        "warnings": [w for rep in reports for w in rep.warnings] + skipped,
        "dry_run": any(rep.dry_run for rep in reports),
    }


class ClusterApplier:
    def __init__(self, *, kubeconfig: Path | None, dry_run: bool) -> None:
        self.kubeconfig = kubeconfig
        self.dry_run = dry_run

    async def apply(self, report: RunReport) -> dict[str, Any]:
        batches: list[tuple[list[PolicyDocument], dict[str, str]]] = [
            (report.generation.documents, CDR_SELECTOR)
        ]
        skipped: list[str] = []
        if report.intel is not None:
            if report.intel.feeds and all(f.status is FeedStatus.FAILED for f in report.intel.feeds):
                skipped.append("threat intel: every feed failed; the cluster's blocklist was left as it is")
            else:
                batches.append((report.intel.documents, dict(THREAT_INTEL_SELECTOR)))
        if report.dns is not None:
            batches.append((report.dns.documents, dict(DNS_SELECTOR)))
        try:
            client = load_client(self.kubeconfig)
        except KubeConfigError as exc:
            raise ApplyError(f"--apply: {exc}") from exc
        try:
            reports = [
                await apply_documents(docs, client, managed_selector=selector, dry_run=self.dry_run)
                for docs, selector in batches
            ]
        finally:
            await client.close()
        return _as_dict(reports, skipped)
