"""``GET /v1/intel/feeds`` (status and freshness of every feed) and ``GET /v1/intel/lookup/{ip}``."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from qcdr_common.api.auth import require_scope
from qcdr_common.api.errors import ApiError, Problem

from qcdr_ingest.deps import SessionDep
from qcdr_ingest.intel import indicator_store
from qcdr_ingest.intel.schemas import FeedStatusRead, IntelFeeds, IntelLookup, ListedCidr, ReputationRead
from qcdr_ingest.intel.state_postgres import ReputationRepository

router = APIRouter(prefix="/v1/intel", tags=["intel"], dependencies=[Depends(require_scope("read"))])


@router.get("/feeds", response_model=IntelFeeds, summary="Threat-intel feeds: status, freshness, counts")
async def feeds(session: SessionDep) -> IntelFeeds:
    state = await indicator_store.load_state(session)
    if state is None:
        return IntelFeeds(refreshed_at=None, changed_at=None, content_hash=None, cidrs=0, feeds=[])
    now = datetime.now(UTC)
    listed = []
    for row in state.feeds:
        feed = FeedStatusRead.model_validate(row)
        if feed.fetched_at is not None:
            feed.age_s = round((now - feed.fetched_at).total_seconds(), 3)
        listed.append(feed)
    return IntelFeeds(
        refreshed_at=state.refreshed_at,
        changed_at=state.changed_at,
        content_hash=state.content_hash,
        cidrs=state.cidrs,
        feeds=listed,
    )


@router.get(
    "/lookup/{ip}",
    response_model=IntelLookup,
    summary="Is this address listed by threat intel?",
    responses={422: {"model": Problem, "description": "Not an IP address"}},
)
async def lookup(ip: Annotated[str, Path(max_length=64)], session: SessionDep) -> IntelLookup:
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        raise ApiError(422, f"not an IP address: {ip[:64]!r}", reason="invalid_ip") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    text = address.compressed
    matches = [
        ListedCidr(cidr=c, feeds=f, confidence=n) for c, f, n in await indicator_store.lookup(session, text)
    ]
    cached = await ReputationRepository(session).get_many([text])
    reputation = (
        ReputationRead(
            score=cached[0].score,
            total_reports=cached[0].total_reports,
            is_whitelisted=cached[0].is_whitelisted,
            is_tor=cached[0].is_tor,
            checked_at=cached[0].checked_at,
        )
        if cached
        else None
    )
    return IntelLookup(ip=text, listed=bool(matches), matches=matches, reputation=reputation)
