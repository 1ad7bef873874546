"""``/v1/profiles``: behavioural profiles per image (read scope), and their reset (write scope).

A profile is named by its key (``sha256:<digest>``, ``image:<ref>``, ``workload:<key>``) or by
the key of a workload using it (``cluster/namespace/Kind/name``): both contain slashes or colons,
hence the ``path`` parameters.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from qcdr_common.api.auth import ReadPrincipal, WritePrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import PageParams, keyset, split_page

from qcdr_analysis.deps import Session
from qcdr_analysis.profiles import repository as repo
from qcdr_analysis.profiles import service
from qcdr_analysis.profiles.schemas import ProfileList, ProfileRead, ProfileState

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])

_MAX_VALUES = 50
Ref = Annotated[
    str,
    Path(
        min_length=1,
        max_length=600,
        description="A profile key (sha256:…, image:…) or a workload key (cluster/namespace/Kind/name).",
    ),
]
Top = Annotated[int, Query(ge=1, le=100, description="Top behaviours listed per kind.")]


def _not_found(ref: str) -> ApiError:
    return ApiError(404, f"no profile for {ref!r}", reason="profile_not_found")


@router.get("", response_model=ProfileList, summary="List profiles")
async def list_profiles(
    _: ReadPrincipal,
    page: PageParams,
    session: Session,
    state: Annotated[ProfileState | None, Query(description="Only profiles in this state.")] = None,
    namespace: Annotated[
        list[str], Query(max_length=_MAX_VALUES, description="Profiles used in these namespaces.")
    ] = [],  # noqa: B006  # FastAPI copies defaults per request
) -> ProfileList:
    """Profiles, newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""
    filters = repo.ProfileFilters(state=state.value if state else None, namespace=tuple(namespace))
    stmt = keyset(repo.select_profiles(filters), page, repo.CREATED_AT, repo.KEY)
    rows = (await session.execute(stmt)).all()
    items, next_cursor = split_page(rows, page, key=lambda row: (row.created_at, row.key))
    return ProfileList(items=[service.summary_of(row) for row in items], next_cursor=next_cursor)


@router.post("/{ref:path}/reset", response_model=ProfileRead, summary="Reset a profile to learning")
async def reset_profile(_: WritePrincipal, session: Session, ref: Ref, top: Top = 10) -> ProfileRead:
    """Clear what the profile learned and saw; it learns again from its next event. Workers
    holding it reload it with their next batch."""
    row = await service.resolve(session, ref, for_update=True)
    if row is None:
        raise _not_found(ref)
    row = await service.reset(session, row)
    body = await service.read(session, row, top)
    await session.commit()
    return body


@router.get("/{ref:path}", response_model=ProfileRead, summary="Get one profile")
async def get_profile(_: ReadPrincipal, session: Session, ref: Ref, top: Top = 10) -> ProfileRead:
    """State, learning progress, workloads, top behaviours and what was seen after learning."""
    row = await service.resolve(session, ref)
    if row is None:
        raise _not_found(ref)
    return await service.read(session, row, top)
