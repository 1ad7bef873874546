"""``/v1/policies`` and ``/v1/findings/{id}/policy``: what SOAR tools read and decide.

Every route needs a bearer token (the middleware in front of the app enforces read for GET and
write for POST; the dependencies declare it in the OpenAPI document too). Errors are problem
details with a stable ``reason``: ``policy_not_found``, ``version_not_found``,
``finding_not_linked``, ``illegal_transition`` and ``no_cluster`` (409), ``cluster_error`` (502).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import Response
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import Page, PageParams, split_page

from qcdr_response.deps import Cluster, Session, Settings
from qcdr_response.lifecycle import repository as repo
from qcdr_response.lifecycle import transitions
from qcdr_response.lifecycle.models import PolicyRow, PolicyStatus
from qcdr_response.lifecycle.schemas import (
    ActionRequest,
    FindingPolicyRead,
    PolicyDetail,
    PolicyRead,
    VersionRead,
    VersionSummary,
)

router = APIRouter(prefix="/v1", tags=["policies"])

YAML_MEDIA_TYPE = "text/yaml"
# Filters are matched literally; the patterns keep out what no policy can carry (NUL bytes, ...).
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
PolicyId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The policy's id.")]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="A version number (1, 2, ...).")]
Note = Annotated[ActionRequest | None, Body()]


def _not_found(policy_id: int) -> ApiError:
    return ApiError(404, f"no policy with id {policy_id}", reason="policy_not_found")


async def _policy(session: Session, policy_id: int) -> PolicyRow:
    policy = await repo.policy_by_id(session, policy_id)
    if policy is None:
        raise _not_found(policy_id)
    return policy


@router.get("/policies", response_model=Page[PolicyRead], summary="List policies, newest first")
async def list_policies(
    session: Session,
    page: PageParams,
    _: ReadPrincipal,
    status: Annotated[PolicyStatus | None, Query(description="Only policies in this status.")] = None,
    family: Annotated[str | None, Query(pattern=_NAME_PATTERN, description="Generator family.")] = None,
    namespace: Annotated[
        str | None,
        Query(pattern=r"^$|" + _NAME_PATTERN, description="Namespace; empty for cluster-scoped policies."),
    ] = None,
    kind: Annotated[
        str | None, Query(pattern=_NAME_PATTERN, description="e.g. TracingPolicyNamespaced.")
    ] = None,
) -> Page[PolicyRead]:
    where = repo.PolicyFilter(
        status=status.value if status is not None else None, family=family, namespace=namespace, kind=kind
    )
    rows = await repo.list_policies(session, where, page)
    items, next_cursor = split_page(rows, page, key=lambda p: (p.id, p.id))
    return Page[PolicyRead](items=[PolicyRead.of(p) for p in items], next_cursor=next_cursor)


@router.get("/policies/{policy_id}", response_model=PolicyDetail, summary="A policy with its versions")
async def get_policy(policy_id: PolicyId, session: Session, _: ReadPrincipal) -> PolicyDetail:
    policy = await _policy(session, policy_id)
    versions = await repo.versions(session, policy.id)
    return PolicyDetail(
        **PolicyRead.of(policy).model_dump(), versions=[VersionSummary.of(v) for v in versions]
    )


@router.get(
    "/policies/{policy_id}/yaml",
    response_class=Response,
    summary="The current version as YAML (ready for kubectl apply)",
    responses={200: {"content": {YAML_MEDIA_TYPE: {"schema": {"type": "string"}}}}},
)
async def get_policy_yaml(policy_id: PolicyId, session: Session, _: ReadPrincipal) -> Response:
    policy = await _policy(session, policy_id)
    version = await repo.version(session, policy.id, policy.current_version)
    if version is None:
        raise _not_found(policy_id)
    return Response(
        version.yaml,
        media_type=YAML_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'inline; filename="{policy.name}-v{version.version}.yaml"',
            "ETag": f'"{version.content_hash}"',
        },
    )


@router.get("/policies/{policy_id}/versions/{number}", response_model=VersionRead, summary="One version")
async def get_version(
    policy_id: PolicyId, number: VersionNumber, session: Session, _: ReadPrincipal
) -> VersionRead:
    policy = await _policy(session, policy_id)
    version = await repo.version(session, policy.id, number)
    if version is None:
        raise ApiError(
            404,
            f"policy {policy_id} has no version {number} (current: {policy.current_version})",
            reason="version_not_found",
        )
    return VersionRead.of(version)


def _with_note(action: str, principal: str, body: ActionRequest | None) -> str:
    note = f": {body.note}" if body is not None and body.note else ""
    return f"{action} by {principal}{note}"


async def _transition(session: Session, policy_id: int, op: transitions.Transition) -> PolicyRead:
    try:
        policy = await op()
    except transitions.PolicyNotFoundError:
        raise _not_found(policy_id) from None
    except transitions.TransitionError as exc:
        raise ApiError(409, exc.reason, reason=exc.code) from None
    except transitions.ClusterFailedError as exc:
        raise ApiError(502, exc.reason, reason="cluster_error") from None
    await session.commit()
    return PolicyRead.of(policy)


@router.post("/policies/{policy_id}/approve", response_model=PolicyRead, summary="proposed → approved")
async def approve_policy(
    policy_id: PolicyId, session: Session, settings: Settings, principal: WritePrincipal, body: Note = None
) -> PolicyRead:
    reason = _with_note("approved", principal.name, body)
    return await _transition(
        session,
        policy_id,
        lambda: transitions.approve(session, policy_id, cluster_id=settings.cluster_id, reason=reason),
    )


@router.post(
    "/policies/{policy_id}/apply",
    response_model=PolicyRead,
    summary="approved → applied (server-side apply of the current version)",
)
async def apply_policy(
    policy_id: PolicyId,
    session: Session,
    settings: Settings,
    cluster: Cluster,
    principal: WritePrincipal,
    body: Note = None,
) -> PolicyRead:
    reason = _with_note("applied", principal.name, body)
    return await _transition(
        session,
        policy_id,
        lambda: transitions.apply(session, policy_id, cluster, cluster_id=settings.cluster_id, reason=reason),
    )


@router.post(
    "/policies/{policy_id}/revoke",
    response_model=PolicyRead,
    summary="→ revoked (deleted from the cluster if it was applied)",
)
async def revoke_policy(
    policy_id: PolicyId,
    session: Session,
    settings: Settings,
    cluster: Cluster,
    principal: WritePrincipal,
    body: Note = None,
) -> PolicyRead:
    reason = _with_note("revoked", principal.name, body)
    return await _transition(
        session,
        policy_id,
        lambda: transitions.revoke(
            session, policy_id, cluster, cluster_id=settings.cluster_id, reason=reason
        ),
    )


@router.get(
    "/findings/{finding_id}/policy",
    response_model=FindingPolicyRead,
    tags=["findings"],
    summary="The policy version a finding is linked to",
)
async def get_finding_policy(
    finding_id: Annotated[str, Path(min_length=1, max_length=200)], session: Session, _: ReadPrincipal
) -> FindingPolicyRead:
    # PostgreSQL text cannot hold NUL: such an id cannot exist (and must not reach the database)
    found = None if "\x00" in finding_id else await repo.finding_link(session, finding_id)
    if found is None:
        raise ApiError(404, f"finding {finding_id!r} has not been linked (yet)", reason="finding_not_linked")
    return FindingPolicyRead.of(*found)
