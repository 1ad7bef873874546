"""Baselines: spokes upload theirs and fetch the others' (``/federation/v1/baselines``, spoke
credential); operators see what the hub holds (``GET /v1/baselines``, API token)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.api.pagination import Page, PageParams, keyset, split_page
from qcdr_common.contracts.federation.v1 import BaselineUpload, SharedBaseline
from qcdr_common.logging import get_logger
from sqlalchemy import Select, select

from qcdr_federation.deps import Session, Settings
from qcdr_federation.hub.baselines import service
from qcdr_federation.hub.baselines.models import BaselineRow
from qcdr_federation.hub.body import parse_body
from qcdr_federation.hub.clusters.models import ClusterRow
from qcdr_federation.hub.spoke_auth import SpokeAuth

log = get_logger("qcdr.federation.baselines")

spoke_router = APIRouter(prefix="/federation/v1", tags=["spoke protocol"])
router = APIRouter(tags=["baselines"])


class BaselinesStored(BaseModel):
    stored: int = Field(description="Baselines newer than what the hub held (the others changed nothing).")


class BaselinePage(BaseModel):
    items: list[SharedBaseline]
    next: str = Field(description="Pass as ?after= next time (the same cursor when nothing was new).")
    more: bool = Field(description="More items wait after this page: ask again at once.")


class BaselineRead(BaseModel):
    profile_key: str
    source_cluster: str
    generation: int
    ready_at: datetime | None
    updated_at: datetime
    seq: int


@spoke_router.post(
    "/baselines",
    response_model=BaselinesStored,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BaselineUpload.model_json_schema()}},
        }
    },
)
async def upload(
    caller: SpokeAuth, request: Request, session: Session, settings: Settings
) -> BaselinesStored:
    body = await parse_body(request, BaselineUpload, settings.forward_max_bytes)
    stored = await service.store(session, caller, body.baselines, datetime.now(UTC))
    await session.commit()
    log.info(
        "federation_baselines_uploaded", cluster=caller.cluster_name, sent=len(body.baselines), stored=stored
    )
    return BaselinesStored(stored=stored)


@spoke_router.get("/baselines", response_model=BaselinePage)
async def fetch(
    caller: SpokeAuth,
    session: Session,
    after: Annotated[str, Query(pattern=r"^[0-9]{0,18}$", description="The last page's `next`.")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> BaselinePage:
    """Baselines of the other clusters (newest generation per profile key), after the cursor."""
    items, cursor, more = await service.for_spoke(session, caller, after=int(after or 0), limit=limit)
    return BaselinePage(items=items, next=str(cursor), more=more)


@router.get("/v1/baselines", response_model=Page[BaselineRead])
async def list_baselines(
    page: PageParams,
    session: Session,
    _: ReadPrincipal,
    profile_key: Annotated[str | None, Query(max_length=100)] = None,
    cluster: Annotated[str | None, Query(max_length=63)] = None,
) -> Page[BaselineRead]:
    """What the hub holds, newest first (without the profile data)."""
    table = BaselineRow.__table__
    stmt = select(BaselineRow, ClusterRow.name).join(
        ClusterRow, ClusterRow.id == BaselineRow.source_cluster_id
    )
    if profile_key is not None:
        stmt = stmt.where(BaselineRow.profile_key == profile_key)
    if cluster is not None:
        stmt = stmt.where(ClusterRow.name == cluster)
    rows = (
        await session.execute(keyset(cast("Select[Any]", stmt), page, table.c.seq, table.c.profile_key))
    ).all()
    items, next_cursor = split_page(rows, page, key=lambda r: (r[0].seq, r[0].profile_key))
    return Page(
        items=[
            BaselineRead(
                profile_key=row.profile_key,
                source_cluster=name,
                generation=row.generation,
                ready_at=row.ready_at,
                updated_at=row.updated_at,
                seq=row.seq,
            )
            for row, name in items
        ],
        next_cursor=next_cursor,
    )
