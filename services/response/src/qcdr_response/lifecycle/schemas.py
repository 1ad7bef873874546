"""API shapes of the policy lifecycle."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qcdr_response.lifecycle.models import (
    FindingPolicyRow,
    LinkOutcome,
    PolicyRow,
    PolicyStatus,
    PolicyVersionRow,
)
from qcdr_response.streams import FederationOrigin


class PolicyRead(BaseModel):
    id: int
    api_version: str
    kind: str
    namespace: str | None = Field(description="Null for cluster-scoped kinds.")
    name: str
    family: str = Field(description="The generator family (e.g. 'container-escape').")
    status: PolicyStatus
    status_reason: str | None
    current_version: int
    applied_version: int | None = Field(description="The version in the cluster, if any.")
    created_at: datetime
    updated_at: datetime
    federation: FederationOrigin | None = Field(
        default=None,
        description="For policies placed by a federation hub (family 'federated'): the hub's "
        "policy id, generation and content hash of the placement this version came from.",
    )

    @classmethod
    def of(cls, row: PolicyRow) -> PolicyRead:
        return cls(
            id=row.id,
            api_version=row.api_version,
            kind=row.kind,
            namespace=row.namespace or None,
            name=row.name,
            family=row.family,
            status=PolicyStatus(row.status),
            status_reason=row.status_reason,
            current_version=row.current_version,
            applied_version=row.applied_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            federation=FederationOrigin.from_stored(row.federation),
        )


class VersionSummary(BaseModel):
    version: int
    content_hash: str = Field(description="sha256 of the canonical JSON of the body.")
    finding_count: int
    filename: str
    created_at: datetime

    @classmethod
    def of(cls, row: PolicyVersionRow) -> VersionSummary:
        return cls(
            version=row.version,
            content_hash=row.content_hash,
            finding_count=row.finding_count,
            filename=row.filename,
            created_at=row.created_at,
        )


class PolicyDetail(PolicyRead):
    versions: list[VersionSummary]


class VersionRead(VersionSummary):
    policy_id: int
    body: dict[str, Any] = Field(description="The Kubernetes object.")
    yaml: str

    @classmethod
    def of(cls, row: PolicyVersionRow) -> VersionRead:
        return cls(
            **VersionSummary.of(row).model_dump(), policy_id=row.policy_id, body=row.body, yaml=row.yaml
        )


class ActionRequest(BaseModel):
    """Optional body of approve/apply/revoke: a note kept in the status reason."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


class FindingPolicyRead(BaseModel):
    finding_id: str
    outcome: LinkOutcome = Field(description="linked, or why no policy covers it (unmapped, dropped).")
    reason: str | None
    linked_at: datetime
    policy: PolicyRead | None
    version: int | None
    content_hash: str | None

    @classmethod
    def of(
        cls, link: FindingPolicyRow, version: PolicyVersionRow | None, policy: PolicyRow | None
    ) -> FindingPolicyRead:
        return cls(
            finding_id=link.finding_id,
            outcome=LinkOutcome(link.outcome),
            reason=link.reason,
            linked_at=link.linked_at,
            policy=PolicyRead.of(policy) if policy is not None else None,
            version=version.version if version is not None else None,
            content_hash=version.content_hash if version is not None else None,
        )
