"""``/v1/federated-policies``: the operator API of federated policies (hub role).

Reads need the read scope, writes the write scope (the common bearer middleware; the
dependencies below also name the caller for the version history). Errors are problem details with
a stable ``reason``: ``invalid_policy`` (422, one entry per issue in ``errors``: unknown kind,
missing namespace, a patch that does not apply for a declared cluster, a bad selector...),
``validation_error`` (422, the body does not fit the schema), ``policy_exists`` (409),
``policy_not_found`` (404), ``name_mismatch`` (422: PUT cannot rename).

After a committed change the placements are recomputed on this replica before the answer (so a
spoke pulling from it next sees the change) and every other replica is told through Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError, FieldError
from qcdr_common.api.pagination import Page, PageParams, split_page
from qcdr_common.contracts.federation.v1 import FederatedPolicySpec
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_federation.deps import Session
from qcdr_federation.hub.policies import repository as repo
from qcdr_federation.hub.policies import rollout, service
from qcdr_federation.hub.policies.issues import PolicySpecError
from qcdr_federation.hub.policies.models import FederatedPolicyRow, FederatedPolicyVersionRow
from qcdr_federation.hub.policies.notify import notify_placements_changed
from qcdr_federation.hub.policies.schemas import (
    FederatedPolicyRead,
    FederatedPolicyStatus,
    FederatedPolicyVersionRead,
    FederatedPolicyWrite,
    RolloutStatus,
)

router = APIRouter(prefix="/v1/federated-policies", tags=["federated policies"])

PolicyId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^fp-[0-9a-f-]{1,60}$")]


def read_model(row: FederatedPolicyRow) -> FederatedPolicyRead:
    spec = FederatedPolicySpec.model_validate(row.spec)
    return FederatedPolicyRead(
        id=row.id,
        name=row.name,
        api_version=row.api_version,
        kind=row.kind,
        generation=row.generation,
        content_hash=row.content_hash,
        source=row.source,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        template=spec.template,
        placement=spec.placement,
        overrides=spec.overrides,
        enforce=spec.enforce,
        description=spec.description,
        rollout=spec.rollout,
        suspended=row.suspended_at is not None,
        suspended_at=row.suspended_at,
        suspended_by=row.suspended_by,
    )


def _version_model(row: FederatedPolicyVersionRow) -> FederatedPolicyVersionRead:
    return FederatedPolicyVersionRead(
        policy_id=row.policy_id,
        generation=row.generation,
        content_hash=row.content_hash,
        created_by=row.created_by,
        created_at=row.created_at,
        spec=FederatedPolicySpec.model_validate(row.spec),
    )


def invalid(exc: PolicySpecError) -> ApiError:
    return ApiError(
        422,
        str(exc),
        reason="invalid_policy",
        errors=[FieldError(loc=["body", *i.loc], msg=i.msg, type="invalid_policy") for i in exc.issues],
    )


def not_found(policy_id: str) -> ApiError:
    return ApiError(404, f"no federated policy {policy_id!r}", reason="policy_not_found")


@router.get("", response_model=Page[FederatedPolicyRead], summary="Live federated policies, by name")
async def list_policies(page: PageParams, session: Session, _: ReadPrincipal) -> Page[FederatedPolicyRead]:
    rows = await repo.page(session, page)
    items, next_cursor = split_page(rows, page, key=lambda r: (r.name, r.id))
    return Page(items=[read_model(r) for r in items], next_cursor=next_cursor)


@router.post("", response_model=FederatedPolicyRead, status_code=201, summary="Create a federated policy")
async def create_policy(
    body: FederatedPolicyWrite, request: Request, session: Session, who: WritePrincipal
) -> FederatedPolicyRead:
    if await repo.get_by_name(session, body.name) is not None:
        raise ApiError(
            409,
            f"federated policy {body.name!r} exists; PUT /v1/federated-policies/{{id}} changes it",
            reason="policy_exists",
        )
    try:
        row = await service.apply_spec(session, body.name, body.spec(), source="api", actor=who.name)
    except PolicySpecError as exc:
        raise invalid(exc) from None
    if body.suspended:
        # created suspended: no cluster has it yet, so none gets it until it is resumed
        await rollout.suspend(session, row.id, who.name, keep_current=False)
    await session.commit()
    await notify_placements_changed(request.app)
    return read_model(row)


@router.get("/{policy_id}", response_model=FederatedPolicyRead, summary="One federated policy")
async def get_policy(policy_id: PolicyId, session: Session, _: ReadPrincipal) -> FederatedPolicyRead:
    row = await repo.get(session, policy_id)
    if row is None:
        raise not_found(policy_id)
    return read_model(row)


@router.put(
    "/{policy_id}",
    response_model=FederatedPolicyRead,
    summary="Replace a federated policy's spec (a new generation only when it changed)",
)
async def put_policy(
    policy_id: PolicyId, body: FederatedPolicyWrite, request: Request, session: Session, who: WritePrincipal
) -> FederatedPolicyRead:
    row = await repo.get(session, policy_id, for_update=True)
    if row is None:
        raise not_found(policy_id)
    if body.name != row.name:
        raise ApiError(
            422,
            f"the policy is named {row.name!r}; a PUT cannot rename it to {body.name!r}",
            reason="name_mismatch",
            errors=[
                FieldError(loc=["body", "name"], msg="must equal the policy's name", type="name_mismatch")
            ],
        )
    generation, was_suspended = row.generation, row.suspended_at is not None
    try:
        if body.suspended and not was_suspended:
            # before the new spec: clusters keep the generation they have now
            await rollout.suspend(session, row.id, who.name)
        row = await service.apply_spec(session, row.name, body.spec(), source=row.source, actor=who.name)
        if body.suspended is False and was_suspended:
            await rollout.resume(session, row.id, who.name)
    except PolicySpecError as exc:
        await session.rollback()
        raise invalid(exc) from None
    await session.commit()
    if row.generation != generation or (row.suspended_at is not None) != was_suspended:
        await notify_placements_changed(request.app)
    return read_model(row)


@router.delete("/{policy_id}", status_code=204, summary="Delete a federated policy (it leaves every cluster)")
async def delete_policy(
    policy_id: PolicyId, request: Request, session: Session, _: WritePrincipal
) -> Response:
    if not await service.delete_policy(session, policy_id):
        raise not_found(policy_id)
    await session.commit()
    await notify_placements_changed(request.app)
    return Response(status_code=204)


@router.get(
    "/{policy_id}/versions",
    response_model=Page[FederatedPolicyVersionRead],
    summary="The policy's generations, newest first",
)
async def list_versions(
    policy_id: PolicyId, page: PageParams, session: Session, _: ReadPrincipal
) -> Page[FederatedPolicyVersionRead]:
    if await repo.get(session, policy_id) is None:
        raise not_found(policy_id)
    rows = await repo.versions_page(session, policy_id, page)
    items, next_cursor = split_page(rows, page, key=lambda r: (r.generation, r.generation))
    return Page(items=[_version_model(r) for r in items], next_cursor=next_cursor)


@router.get(
    "/{policy_id}/status",
    response_model=FederatedPolicyStatus,
    summary="Where the policy stands on every cluster it is placed on or has a status from",
)
async def get_status(policy_id: PolicyId, session: Session, _: ReadPrincipal) -> FederatedPolicyStatus:
    try:
        status = await service.policy_status(session, policy_id)
    except PolicySpecError as exc:
        raise ApiError(409, str(exc), reason="policy_unreadable") from None
    if status is None:
        raise not_found(policy_id)
    return status


async def _suspension(
    change: Callable[[AsyncSession, str, str], Awaitable[FederatedPolicyRow | None]],
    policy_id: str,
    request: Request,
    session: AsyncSession,
    actor: str,
) -> FederatedPolicyRead:
    row = await change(session, policy_id, actor)
    if row is None:
        raise not_found(policy_id)
    await session.commit()
    await notify_placements_changed(request.app)
    return read_model(row)


@router.post(
    "/{policy_id}/suspend",
    response_model=FederatedPolicyRead,
    summary="Suspend a policy: every cluster keeps what it has; nothing is added, updated or removed",
)
async def suspend_policy(
    policy_id: PolicyId, request: Request, session: Session, who: WritePrincipal
) -> FederatedPolicyRead:
    return await _suspension(rollout.suspend, policy_id, request, session, who.name)


@router.post(
    "/{policy_id}/resume",
    response_model=FederatedPolicyRead,
    summary="Resume a suspended policy (its rollout goes on, or every placed cluster gets it)",
)
async def resume_policy(
    policy_id: PolicyId, request: Request, session: Session, who: WritePrincipal
) -> FederatedPolicyRead:
    return await _suspension(rollout.resume, policy_id, request, session, who.name)


@router.get(
    "/{policy_id}/rollout",
    response_model=RolloutStatus,
    summary="Where the current generation's rollout stands, cluster by cluster",
)
async def get_rollout(policy_id: PolicyId, session: Session, _: ReadPrincipal) -> RolloutStatus:
    row = await repo.get(session, policy_id)
    if row is None:
        raise not_found(policy_id)
    try:
        return await service.rollout_status(session, row, datetime.now(UTC))
    except PolicySpecError as exc:
        raise ApiError(409, str(exc), reason="policy_unreadable") from None
