"""``/v1/admission/policies``: list, read, create, replace, delete.

Reads need the read scope, changes the write scope. Errors are problem details with a stable
``reason``: ``validation_error`` (422: a malformed policy, a name that is not DNS-1123, a body
name that differs from the path), ``policy_not_found`` (404), ``policy_exists`` (409),
``built_in_policy`` (409: a built-in that was never stored cannot be deleted; store it with
``enabled: false`` instead). A change is committed, then this replica reloads at once; the
others within ``policies_poll_s``. A stored policy that no longer validates (a check removed in
an upgrade) is listed and read as its stored JSON with ``invalid`` saying why; the engine skips
it until it is replaced or deleted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError, FieldError
from qcdr_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qcdr_admission.policies import repository as repo
from qcdr_admission.policies.defaults import BUILT_IN
from qcdr_admission.policies.model import AdmissionPolicy
from qcdr_admission.policies.models import PolicyRow
from qcdr_admission.policies.reload import PolicyStore, invalid_reason
from qcdr_admission.policies.schemas import PolicyList, PolicyRead

router = APIRouter(prefix="/v1/admission", tags=["admission policies"])
log = get_logger("qcdr.admission.policies")

Name = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
_BUILT_IN = {p.name: p for p in BUILT_IN}


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


def _store(request: Request) -> PolicyStore | None:
    store: PolicyStore | None = getattr(request.app.state, "policy_store", None)
    return store


def _read(row: PolicyRow) -> PolicyRead:
    try:
        policy: AdmissionPolicy | dict[str, Any] = AdmissionPolicy.model_validate(row.spec)
        invalid = None
    except ValidationError as exc:  # stored before an upgrade that dropped or tightened a check
        policy, invalid = row.spec, invalid_reason(exc)
    return PolicyRead(
        policy=policy,
        invalid=invalid,
        built_in=row.name in _BUILT_IN,
        stored=True,
        version=row.version,
        generation=row.generation,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _built_in(policy: AdmissionPolicy) -> PolicyRead:
    return PolicyRead(
        policy=policy,
        built_in=True,
        stored=False,
        version=None,
        generation=None,
        updated_at=None,
        updated_by=None,
    )


async def _reload(request: Request) -> None:
    store = _store(request)
    if store is None:
        return
    try:
        await store.refresh()
    except Exception as exc:  # the poller will catch up; the change is committed
        log.warning("admission_policies_reload_failed", error=f"{type(exc).__name__}: {exc}"[:300])


@router.get("/policies", response_model=PolicyList, summary="Every policy, built-in and stored, by name")
async def list_policies(request: Request, _: ReadPrincipal) -> PolicyList:
    store = _store(request)
    async with _sessions(request)() as session:
        generation = await repo.generation(session)
        rows = await repo.list_all(session)
    items = {r.name: _read(r) for r in rows}
    if store is None or store.built_in:
        for name, policy in _BUILT_IN.items():
            items.setdefault(name, _built_in(policy))
    return PolicyList(
        generation=generation,
        loaded_generation=store.generation if store is not None else -1,
        items=[items[n] for n in sorted(items)],
    )


@router.get("/policies/{name}", response_model=PolicyRead, summary="One policy")
async def get_policy(name: Name, request: Request, _: ReadPrincipal) -> PolicyRead:
    async with _sessions(request)() as session:
        row = await repo.get(session, name)
    if row is not None:
        return _read(row)
    if name in _BUILT_IN:
        return _built_in(_BUILT_IN[name])
    raise ApiError(404, f"no admission policy {name!r}", reason="policy_not_found")


@router.post("/policies", response_model=PolicyRead, status_code=201, summary="Create a policy")
async def create_policy(policy: AdmissionPolicy, request: Request, who: WritePrincipal) -> PolicyRead:
    async with _sessions(request)() as session:
        if await repo.get(session, policy.name) is not None:
            raise ApiError(
                409, f"admission policy {policy.name!r} exists; PUT replaces it", reason="policy_exists"
            )
        row = await repo.create(
            session, policy.name, policy.model_dump(mode="json"), policy.enabled, who.name
        )
        await session.commit()
    await _reload(request)
    return _read(row)


@router.put("/policies/{name}", response_model=PolicyRead, summary="Create or replace a policy")
async def put_policy(
    name: Name, policy: AdmissionPolicy, request: Request, response: Response, who: WritePrincipal
) -> PolicyRead:
    if policy.name != name:
        raise ApiError(
            422,
            f"the body names {policy.name!r} but the path {name!r}",
            reason="validation_error",
            errors=[FieldError(loc=["body", "name"], msg="must equal the path's name", type="value_error")],
        )
    spec = policy.model_dump(mode="json")
    async with _sessions(request)() as session:
        row = await repo.get(session, name, for_update=True)
        if row is None:
            row = await repo.create(session, name, spec, policy.enabled, who.name)
            response.status_code = 201
        else:
            row = await repo.replace(session, row, spec, policy.enabled, who.name)
        await session.commit()
    await _reload(request)
    return _read(row)


@router.delete("/policies/{name}", status_code=204, summary="Delete a stored policy")
async def delete_policy(name: Name, request: Request, _: WritePrincipal) -> Response:
    async with _sessions(request)() as session:
        removed = await repo.remove(session, name)
        await session.commit()
    if not removed:
        if name in _BUILT_IN:
            raise ApiError(
                409,
                f"{name!r} is built in; PUT it with enabled=false to turn it off",
                reason="built_in_policy",
            )
        raise ApiError(404, f"no admission policy {name!r}", reason="policy_not_found")
    await _reload(request)
    return Response(status_code=204)
