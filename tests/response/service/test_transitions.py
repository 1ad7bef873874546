"""Status transitions, and apply/revoke against the shared Kubernetes API test server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_response.db.models import outbox
from qcdr_response.lifecycle import transitions
from qcdr_response.lifecycle.cluster import ClusterGateway
from qcdr_response.lifecycle.models import PolicyRow, PolicyStatus
from qcdr_response.lifecycle.transitions import (
    LEGAL,
    ClusterFailedError,
    PolicyNotFoundError,
    TransitionError,
    check_transition,
)
from qcdr_response.worker import make_lifecycle
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.response.service.conftest import (
    finding_envelope,
    handle_envelopes,
    make_finding,
    response_settings,
)

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]
P = PolicyStatus
TPN = "TracingPolicyNamespaced"


@pytest.mark.parametrize(
    ("current", "target", "made"),
    [
        (P.PROPOSED, P.APPROVED, True),
        (P.PROPOSED, P.REVOKED, True),
        (P.APPROVED, P.APPLIED, True),
        (P.APPROVED, P.REVOKED, True),
        (P.APPLIED, P.REVOKED, True),
        (P.APPROVED, P.APPROVED, False),  # a retried request: nothing to do, no error
        (P.REVOKED, P.REVOKED, False),
    ],
)
def test_legal_transitions(current: PolicyStatus, target: PolicyStatus, made: bool) -> None:
    assert check_transition(current.value, target) is made


@pytest.mark.parametrize(
    ("current", "target", "says"),
    [
        (P.PROPOSED, P.APPLIED, "a proposed policy cannot become applied; it may become approved, revoked"),
        (P.APPLIED, P.APPROVED, "a applied policy cannot become approved; it may become revoked"),
        (P.REVOKED, P.APPROVED, "nothing (revoked is final) (a new version reopens it as proposed)"),
        (P.REVOKED, P.APPLIED, "revoked is final"),
    ],
)
def test_illegal_transitions_say_why(current: PolicyStatus, target: PolicyStatus, says: str) -> None:
    with pytest.raises(TransitionError, match="cannot become") as refused:
        check_transition(current.value, target)
    assert says in refused.value.reason
    assert refused.value.code == "illegal_transition"
    assert target not in LEGAL[current]


@pytest.fixture
def k8s(shared_path: Path) -> Iterator[K8sTestServer]:
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    with server.serve():
        yield server


@pytest.fixture
async def cluster(k8s: K8sTestServer) -> AsyncIterator[ClusterGateway]:
    gateway = ClusterGateway(k8s.async_client)
    yield gateway
    await gateway.close()


async def one_policy(sessions: Sessions, **finding: object) -> int:
    lc = make_lifecycle(response_settings())
    async with sessions.begin() as session:
        await handle_envelopes(session, [finding_envelope(make_finding(**finding))], lc)
    async with sessions() as session:
        return int((await session.scalars(select(PolicyRow.id))).one())


async def status_events(sessions: Sessions) -> list[tuple[str | None, str]]:
    async with sessions() as session:
        rows = (await session.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.id))).all()
    import orjson

    out = []
    for type_, data in rows:
        if type_ == "response.policy_status_changed":
            payload = orjson.loads(data)["payload"]
            out.append((payload["from_status"], payload["to_status"]))
    return out


async def test_approve_apply_revoke_against_the_cluster(
    sessions: Sessions, k8s: K8sTestServer, cluster: ClusterGateway
) -> None:
    pid = await one_policy(sessions)
    async with sessions.begin() as session:
        with pytest.raises(TransitionError, match="proposed policy cannot become applied"):
            await transitions.apply(session, pid, cluster, cluster_id="c1")
    async with sessions.begin() as session:
        await transitions.approve(session, pid, cluster_id="c1")
    async with sessions.begin() as session:
        policy = await transitions.apply(session, pid, cluster, cluster_id="c1")
    assert (policy.status, policy.applied_version) == ("applied", 1)
    assert policy.status_reason == "applied: version 1 created in the cluster"
    stored = k8s.objects(TPN)[("payments", "cdr-block-network-scan")]
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "qcdr"
    assert stored["metadata"]["managedFields"][0]["manager"] == "qcdr"

    async with sessions.begin() as session:
        policy = await transitions.revoke(session, pid, cluster, cluster_id="c1")
    assert (policy.status, policy.applied_version) == ("revoked", None)
    assert "deleted TracingPolicyNamespaced/payments/cdr-block-network-scan" in (policy.status_reason or "")
    assert k8s.objects(TPN) == {}
    assert await status_events(sessions) == [
        (None, "proposed"),
        ("proposed", "approved"),
        ("approved", "applied"),
        ("applied", "revoked"),
    ]


async def test_a_new_version_of_an_applied_policy_keeps_the_old_one_in_the_cluster(
    sessions: Sessions, k8s: K8sTestServer, cluster: ClusterGateway
) -> None:
    pid = await one_policy(sessions)
    async with sessions.begin() as session:
        await transitions.approve(session, pid, cluster_id="c1")
        await transitions.apply(session, pid, cluster, cluster_id="c1")
    await one_policy(sessions)  # a second finding in the same scope: version 2
    async with sessions() as session:
        policy = await session.get(PolicyRow, pid)
    assert policy is not None
    assert (policy.status, policy.current_version, policy.applied_version) == ("proposed", 2, 1)
    stored = k8s.objects(TPN)[("payments", "cdr-block-network-scan")]
    assert stored["metadata"]["annotations"]["qcdr.io/finding-count"] == "1"
    async with sessions.begin() as session:
        await transitions.approve(session, pid, cluster_id="c1")
        policy = await transitions.apply(session, pid, cluster, cluster_id="c1")
    assert policy.applied_version == 2
    assert policy.status_reason == "applied: version 2 configured in the cluster"
    stored = k8s.objects(TPN)[("payments", "cdr-block-network-scan")]
    assert stored["metadata"]["annotations"]["qcdr.io/finding-count"] == "2"


async def test_without_a_cluster_apply_and_revoking_an_applied_policy_are_refused(
    sessions: Sessions, cluster: ClusterGateway
) -> None:
    pid = await one_policy(sessions)
    async with sessions.begin() as session:
        await transitions.approve(session, pid, cluster_id="c1")
        with pytest.raises(TransitionError) as refused:
            await transitions.apply(session, pid, None, cluster_id="c1")
    assert refused.value.code == "no_cluster"
    async with sessions.begin() as session:
        await transitions.apply(session, pid, cluster, cluster_id="c1")
    async with sessions.begin() as session:
        with pytest.raises(TransitionError, match="cannot be deleted") as refused:
            await transitions.revoke(session, pid, None, cluster_id="c1")
    assert refused.value.code == "no_cluster"
    async with sessions() as session:
        policy = await session.get(PolicyRow, pid)
    assert policy is not None
    assert policy.status == "applied"


async def test_a_cluster_that_refuses_leaves_the_policy_approved(sessions: Sessions) -> None:
    server = K8sTestServer(installed=[("", "v1", "Namespace")])  # no Tetragon CRDs
    with server.serve():
        gateway = ClusterGateway(server.async_client)
        try:
            pid = await one_policy(sessions)
            async with sessions.begin() as session:
                await transitions.approve(session, pid, cluster_id="c1")
            with pytest.raises(ClusterFailedError, match="is the TracingPolicyNamespaced kind"):
                async with sessions.begin() as session:
                    await transitions.apply(session, pid, gateway, cluster_id="c1")
        finally:
            await gateway.close()
    async with sessions() as session:
        policy = await session.get(PolicyRow, pid)
    assert policy is not None
    assert (policy.status, policy.applied_version) == ("approved", None)


async def test_unknown_policies(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        with pytest.raises(PolicyNotFoundError):
            await transitions.approve(session, 123456, cluster_id="c1")
