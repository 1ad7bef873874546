"""The ``response:events`` envelopes of federated policies (the status ones are the lifecycle's)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from qcdr_common.streams.envelope import Envelope, new_envelope

from qcdr_response import streams
from qcdr_response.federation.validation import Identity
from qcdr_response.lifecycle.models import PolicyRow, PolicyVersionRow
from qcdr_response.lifecycle.service import SOURCE, policy_ref

Stage = Literal["validation", "conflict", "apply"]


def changed_envelope(
    policy: PolicyRow, version: PolicyVersionRow, *, cluster_id: str, cause: Envelope
) -> Envelope:
    """``response.policy_changed``: a new version, or the same content under a new placement
    (generation) of the hub, so that the spoke can map the status to the generation it holds."""
    payload = streams.PolicyChanged(
        **policy_ref(policy),
        version=version.version,
        content_hash=version.content_hash,
        status=policy.status,
        finding_count=version.finding_count,
    )
    return _envelope(streams.POLICY_CHANGED, payload, cluster_id, cause)


def rejected_envelope(
    identity: Identity,
    origin: streams.FederationOrigin,
    reason: str,
    stage: Stage,
    *,
    cluster_id: str,
    cause: Envelope,
) -> Envelope:
    payload = streams.PolicyRejected(
        federation=origin,
        api_version=identity.api_version,
        kind=identity.kind,
        namespace=identity.namespace,
        name=identity.name,
        reason=clip(reason),
        stage=stage,
    )
    return _envelope(streams.POLICY_REJECTED, payload, cluster_id, cause)


def clip(reason: str, limit: int = streams.MAX_REASON) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _envelope(
    type_: str, payload: streams.PolicyChanged | streams.PolicyRejected, cluster_id: str, cause: Envelope
) -> Envelope:
    return new_envelope(
        type_,
        payload,
        source=SOURCE,
        cluster_id=cluster_id,
        occurred_at=datetime.now(UTC),
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
    )
