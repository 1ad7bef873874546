"""``/v1/chains``: complete attack chains (stored findings of kind ``chain``) and the partial ones
the correlation engine holds (read from its Redis checkpoint, so any replica of the API answers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.api.pagination import PageParams, keyset, split_page
from sqlalchemy import Text, literal, or_
from sqlalchemy.dialects.postgresql import ARRAY

from qcdr_analysis import attack
from qcdr_analysis.correlation.checkpoint import RedisCheckpoint
from qcdr_analysis.correlation.engine import Engine
from qcdr_analysis.correlation.schemas import ChainList, ChainRead, ChainStep, PartialList, TechniqueRead
from qcdr_analysis.deps import Session
from qcdr_analysis.findings import repository as repo
from qcdr_analysis.findings.models import FindingRow

router = APIRouter(prefix="/v1/chains", tags=["chains"])
_MAX_VALUES = 50


def _technique(technique_id: str) -> TechniqueRead:
    return TechniqueRead(
        id=technique_id,
        name=attack.name(technique_id),
        tactics=[t.name for t in attack.tactics(technique_id)],
    )


def _read(row: FindingRow) -> ChainRead:
    payload: dict[str, Any] = row.payload
    attributes = payload.get("attributes", {})
    return ChainRead(
        id=row.id,
        pattern=attributes.get("pattern", row.category.removeprefix("chain.")),
        title=payload.get("title", ""),
        severity=row.severity,
        confidence=float(attributes.get("confidence", 0.0)),
        techniques=[_technique(t) for t in row.techniques],
        steps=[
            ChainStep(
                name=s["name"],
                event_id=s["event_id"],
                event_time=s["event_time"],
                techniques=[_technique(t) for t in s.get("techniques", [])],
                finding_ids=s.get("finding_ids", []),
                cluster=s.get("cluster"),
                workload=s.get("workload") or {},
            )
            for s in attributes.get("steps", [])
        ],
        join=attributes.get("join", {}),
        clusters=attributes.get("clusters", []),
        event_time=row.event_time,
        created_at=row.created_at,
        explanation=payload.get("explanation", ""),
    )


@router.get("", response_model=ChainList, summary="List complete attack chains")
async def list_chains(
    _: ReadPrincipal,
    page: PageParams,
    session: Session,
    pattern: Annotated[list[str], Query(max_length=_MAX_VALUES, description="Pattern names.")] = [],  # noqa: B006
    cluster: Annotated[
        list[str],
        Query(max_length=_MAX_VALUES, description="Chains with a step in one of these clusters."),
    ] = [],  # noqa: B006
    since: Annotated[AwareDatetime | None, Query(description="Event time at or after.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Event time before.")] = None,
    technique: Annotated[str | None, Query(pattern=r"^T\d{4}(\.\d{3})?$")] = None,
) -> ChainList:
    """Newest chain first; ``next_cursor`` pages on."""
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "since must be before until", reason="invalid_time_range")
    filters = repo.FindingFilters(
        since=since,
        until=until,
        kind=("chain",),
        category=tuple(f"chain.{p}" for p in pattern),
        technique=technique,
    )
    stmt = repo.select_findings(filters)
    if cluster:
        # a cross-cluster chain's row names its first cluster; the others are in its attributes
        clusters = FindingRow.payload["attributes"]["clusters"]
        wanted = literal(cluster, ARRAY(Text))
        stmt = stmt.where(or_(FindingRow.cluster.in_(cluster), clusters.has_any(wanted)))
    stmt = keyset(stmt, page, repo.EVENT_TIME, repo.ID)
    rows = (await session.scalars(stmt)).all()
    items, next_cursor = split_page(rows, page, key=lambda row: (row.event_time, row.id))
    return ChainList(items=[_read(row) for row in items], next_cursor=next_cursor)


@router.get("/partial", response_model=PartialList, summary="Chains begun but not complete")
async def partial_chains(_: ReadPrincipal, request: Request) -> PartialList:
    """From the engine's last checkpoint (one micro-batch behind at most)."""
    patterns = getattr(request.app.state, "chain_patterns", None)
    if patterns is None:
        raise ApiError(404, "attack-chain correlation is disabled", reason="correlation_disabled")
    engine = Engine(patterns)
    snapshot, _pending = await RedisCheckpoint(
        request.app.state.redis, request.app.state.settings.redis_prefix
    ).load()
    if snapshot is not None:
        engine.restore(snapshot)
    return PartialList(items=engine.partials(), live_keys=engine.live_keys)


@router.get("/{chain_id}", response_model=ChainRead, summary="Get one attack chain")
async def get_chain(
    _: ReadPrincipal, session: Session, chain_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> ChainRead:
    row = await repo.get_finding(session, chain_id)
    if row is None or row.kind != "chain":
        raise ApiError(404, f"no chain {chain_id!r}", reason="chain_not_found")
    return _read(row)
