"""``--apply``: server-side apply of the generated documents, then prune what qcdr no longer makes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_response.policies.apply import KubeConfigError, apply_documents, load_client
from qcdr_response.policies.metadata import CDR_SELECTOR


class ApplyError(RuntimeError):
    """The cluster could not be reached or configured; one line for the user."""


class ClusterApplier:
    def __init__(self, *, kubeconfig: Path | None, dry_run: bool) -> None:
        self.kubeconfig = kubeconfig
        self.dry_run = dry_run

    async def apply(self, documents: Sequence[PolicyDocument]) -> dict[str, Any]:
        try:
            client = load_client(self.kubeconfig)
        except KubeConfigError as exc:
            raise ApplyError(f"--apply: {exc}") from exc
        try:
            report = await apply_documents(
                documents, client, managed_selector=CDR_SELECTOR, dry_run=self.dry_run
            )
        finally:
            await client.close()
        return {
            "created": [str(r) for r in report.created],
            "configured": [str(r) for r in report.configured],
            "unchanged": [str(r) for r in report.unchanged],
            "pruned": [str(r) for r in report.pruned],
            "failed": [str(f) for f in report.failed],
            "warnings": list(report.warnings),
            "dry_run": report.dry_run,
        }
