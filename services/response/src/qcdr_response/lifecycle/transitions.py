"""Status transitions: ``proposed → approved → applied → revoked``, validated.

A request for the state a policy is already in is answered with the policy unchanged (a SOAR
playbook retrying a call must not fail). Anything else not in ``LEGAL`` is refused with the
reason. Apply and revoke talk to the cluster while holding the policy's row lock, so a new version
arriving meanwhile waits for the outcome instead of racing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_common.streams.outbox import enqueue
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response import streams
from qcdr_response.db.models import outbox
from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle.cluster import ClusterError, ClusterGateway
from qcdr_response.lifecycle.models import PolicyRow, PolicyStatus
from qcdr_response.lifecycle.service import status_envelope
from qcdr_response.policies.apply import ObjectRef

Transition = Callable[[], Awaitable[PolicyRow]]

P = PolicyStatus
LEGAL: dict[PolicyStatus, frozenset[PolicyStatus]] = {
    P.PROPOSED: frozenset({P.APPROVED, P.REVOKED}),
    P.APPROVED: frozenset({P.APPLIED, P.REVOKED}),
    P.APPLIED: frozenset({P.REVOKED}),
    P.REVOKED: frozenset(),
}
NO_CLUSTER = (
    "no Kubernetes cluster is configured (set QCDR_KUBECONFIG or QCDR_KUBE_IN_CLUSTER); "
    "the policy is only written as a file"
)


class PolicyNotFoundError(LookupError):
    pass


class TransitionError(Exception):
    """An illegal transition or one that cannot be made here (HTTP 409); ``reason`` says why and
    ``code`` is the stable machine-readable form (``illegal_transition``, ``no_cluster``)."""

    def __init__(self, reason: str, code: str = "illegal_transition") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ClusterFailedError(Exception):
    """The cluster refused the object or could not be reached (HTTP 502)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_transition(current: str, target: PolicyStatus) -> bool:
    """True when the transition is to be made, False when the policy is already there."""
    state = PolicyStatus(current)
    if state is target:
        return False
    if target not in LEGAL[state]:
        allowed = ", ".join(sorted(s.value for s in LEGAL[state])) or "nothing (revoked is final)"
        hint = " (a new version reopens it as proposed)" if state is P.REVOKED else ""
        raise TransitionError(
            f"a {state.value} policy cannot become {target.value}; it may become {allowed}{hint}"
        )
    return True


async def _locked(session: AsyncSession, policy_id: int) -> PolicyRow:
    policy = await repo.policy_by_id(session, policy_id, for_update=True)
    if policy is None:
        raise PolicyNotFoundError(f"no policy with id {policy_id}")
    return policy


async def _set_status(
    session: AsyncSession,
    policy: PolicyRow,
    target: PolicyStatus,
    reason: str,
    cluster_id: str,
    **values: object,
) -> None:
    before = policy.status
    await repo.touch(session, policy, status=target.value, status_reason=reason, **values)
    await enqueue(
        session, outbox, streams.EVENTS, [status_envelope(policy, before, reason, cluster_id=cluster_id)]
    )


async def approve(
    session: AsyncSession, policy_id: int, *, cluster_id: str, reason: str = "approved"
) -> PolicyRow:
    policy = await _locked(session, policy_id)
    if check_transition(policy.status, P.APPROVED):
        await _set_status(session, policy, P.APPROVED, reason, cluster_id)
    return policy


async def current_document(session: AsyncSession, policy: PolicyRow) -> PolicyDocument:
    version = await repo.version(session, policy.id, policy.current_version)
    if version is None:  # the foreign keys make this a bug, not a user error
        raise RuntimeError(f"policy {policy.id} has no version {policy.current_version}")
    return PolicyDocument(
        family=policy.family,
        filename=version.filename,
        body=version.body,
        finding_count=version.finding_count,
    )


async def apply(
    session: AsyncSession,
    policy_id: int,
    cluster: ClusterGateway | None,
    *,
    cluster_id: str,
    reason: str = "applied",
) -> PolicyRow:
    policy = await _locked(session, policy_id)
    if not check_transition(policy.status, P.APPLIED):
        return policy
    if cluster is None:
        raise TransitionError(NO_CLUSTER, "no_cluster")
    doc = await current_document(session, policy)
    try:
        outcome = await cluster.apply(doc)
    except ClusterError as exc:
        raise ClusterFailedError(f"server-side apply failed: {exc}") from None
    reason = f"{reason}: version {policy.current_version} {outcome} in the cluster"
    await _set_status(session, policy, P.APPLIED, reason, cluster_id, applied_version=policy.current_version)
    return policy


async def revoke(
    session: AsyncSession,
    policy_id: int,
    cluster: ClusterGateway | None,
    *,
    cluster_id: str,
    reason: str = "revoked",
) -> PolicyRow:
    policy = await _locked(session, policy_id)
    if not check_transition(policy.status, P.REVOKED):
        return policy
    if policy.applied_version is not None:
        if cluster is None:
            raise TransitionError(
                f"version {policy.applied_version} is applied in the cluster, but no Kubernetes "
                "cluster is configured here (QCDR_KUBECONFIG or QCDR_KUBE_IN_CLUSTER): it cannot be deleted",
                "no_cluster",
            )
        ref = ObjectRef(policy.api_version, policy.kind, policy.namespace or None, policy.name)
        try:
            existed = await cluster.delete(ref)
        except ClusterError as exc:
            raise ClusterFailedError(str(exc)) from None
        reason = f"{reason}; deleted {ref} from the cluster" + ("" if existed else " (it was already gone)")
    await _set_status(session, policy, P.REVOKED, reason, cluster_id, applied_version=None)
    return policy
