"""``GET /v1/federation/spoke``: where this spoke stands with its hub — registered or not, who it is
there, last contact and last error, the policies it holds with their apply states, and counters.
Read scope. The credential itself is never shown, only its id. Counters and problems are those of
every agent replica heard from lately (this process's own as they are now), as the heartbeat
sends them: the answer does not depend on which replica the request reached."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from qcdr_common.api.auth import ReadPrincipal

from qcdr_federation.deps import Session, Settings
from qcdr_federation.spoke import repository as repo
from qcdr_federation.spoke.heartbeat import LIVE_INTERVALS
from qcdr_federation.spoke.runtime import AgentState, utcnow
from qcdr_federation.spoke.schemas import HeldPolicyRead, SpokeRead

router = APIRouter(prefix="/v1/federation", tags=["federation"])


@router.get("/spoke", response_model=SpokeRead, summary="This spoke's registration, hub contact and policies")
async def spoke_status(request: Request, session: Session, settings: Settings, _: ReadPrincipal) -> SpokeRead:
    row = await repo.get_state(session)
    held = await repo.held_with_status(session)
    live: AgentState | None = getattr(request.app.state, "spoke_state", None)
    policies = [
        HeldPolicyRead(
            policy_id=h.policy.policy_id,
            name=h.policy.name,
            generation=h.policy.generation,
            content_hash=h.policy.content_hash,
            enforce=h.policy.enforce,
            api_version=h.policy.api_version,
            kind=h.policy.kind,
            namespace=h.policy.namespace,
            manifest_name=h.policy.manifest_name,
            received_at=h.policy.received_at,
            state=h.status.state if h.status is not None else "pending",
            message=h.status.message if h.status is not None else None,
            observed_at=h.status.observed_at if h.status is not None else None,
            reported_at=h.status.reported_at if h.status is not None else None,
        )
        for h in held
    ]
    stored_registered = row is not None and row.credential_id is not None
    last_contact = row.last_contact_at if row is not None else None
    if live is not None and live.last_contact_at is not None:
        last_contact = max(live.last_contact_at, last_contact) if last_contact else live.last_contact_at
    interval = live.heartbeat_interval_s if live is not None else settings.heartbeat_interval_s
    others = await repo.replicas_view(
        session,
        live_after=utcnow() - timedelta(seconds=LIVE_INTERVALS * interval),
        exclude=live.replica_id if live is not None else None,
    )
    counts = dict(others.counts)
    problems = set(others.problems)
    if live is not None:
        for key, value in live.counts.items():
            counts[key] = counts.get(key, 0) + int(value)
        problems.update(live.problem_list())
    counts["replicas"] = others.replicas + (live is not None)
    counts["policies_held"] = len(policies)
    return SpokeRead(
        registered=live.registered if live is not None else stored_registered,
        cluster_id=(live.cluster_id if live is not None and live.cluster_id else None)
        or (row.cluster_id if row is not None else None),
        cluster_name=settings.spoke_name,
        hub_url=settings.hub_url or "",
        registered_at=row.registered_at if row is not None else None,
        credential_id=row.credential_id if row is not None else None,
        credential_issued_at=row.credential_issued_at if row is not None else None,
        hub_up=live.hub_up if live is not None else None,
        last_contact_at=last_contact,
        hub_unreachable_since=live.hub_unreachable_since if live is not None else None,
        last_error=(live.last_error if live is not None and live.last_error else None)
        or (row.last_error if row is not None else None),
        heartbeat_interval_s=live.heartbeat_interval_s if live is not None else None,
        policies_etag=row.policies_etag if row is not None else None,
        baselines_cursor=row.baselines_cursor if row is not None else None,
        problems=sorted(problems),
        counts=counts,
        policies=policies,
    )


def spoke_info(state: AgentState) -> dict[str, Any]:
    """The spoke's line in ``GET /v1/federation`` (``app.state.spoke_info``)."""
    snapshot = state.snapshot()
    return {k: snapshot[k] for k in ("registered", "cluster_id", "hub_up", "last_contact_at", "problems")}
