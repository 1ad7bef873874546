"""``/federation/v1/policies`` and ``/federation/v1/status``: what spokes pull and report.

Authenticated by the spoke's credential (:data:`~qcdr_federation.hub.spoke_auth.SpokeAuth`), not by
API tokens: both paths (:data:`SPOKE_PATHS`) are public for the common bearer middleware.

``GET /federation/v1/policies?wait=S`` with ``If-None-Match: "<etag>"``: the set placed on the
caller (200, ``ETag`` quoted), or, when the caller already has it, held until it changes or ``S``
seconds (at most ``long_poll_max_s``; 0 = answer at once) passed, then 304. The sets are served
from memory (``app.state.placements``): a long poll costs no database work while it waits, and a
change wakes only the spokes whose set it changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from qcdr_common.contracts.federation.v1 import PlacedPolicySet, StatusReport

from qcdr_federation.deps import Session, Settings
from qcdr_federation.hub.policies.metrics import PULLS, WAITING
from qcdr_federation.hub.policies.notify import Placements, Served
from qcdr_federation.hub.policies.statuses import record_statuses
from qcdr_federation.hub.spoke_auth import SpokeAuth

router = APIRouter(prefix="/federation/v1", tags=["federation (spokes)"])

SPOKE_PATHS = ("/federation/v1/policies", "/federation/v1/status")


def parse_if_none_match(value: str | None) -> set[str]:
    """The entity tags of an ``If-None-Match`` header, unquoted (weak ones as their opaque part;
    ``*`` as itself)."""
    if not value:
        return set()
    tags = set()
    for part in value.split(","):
        tag = part.strip()
        tag = tag.removeprefix("W/")
        if len(tag) >= 2 and tag.startswith('"') and tag.endswith('"'):
            tag = tag[1:-1]
        if tag:
            tags.add(tag)
    return tags


def _matches(etag: str, known: set[str]) -> bool:
    return etag in known or "*" in known


def _answer(served: Served, known: set[str]) -> Response:
    headers = {"ETag": f'"{served.etag}"', "Cache-Control": "no-cache"}
    if _matches(served.etag, known):
        PULLS.labels(outcome="not_modified").inc()
        return Response(status_code=304, headers=headers)
    PULLS.labels(outcome="changed").inc()
    return Response(content=served.body, media_type="application/json", headers=headers)


@router.get(
    "/policies",
    response_model=PlacedPolicySet,
    responses={304: {"description": "The set the caller has (If-None-Match) is still current."}},
    summary="The policies placed on the calling spoke (ETag; long poll with ?wait=)",
)
async def pull_policies(
    request: Request,
    caller: SpokeAuth,
    settings: Settings,
    wait: Annotated[
        float, Query(ge=0, le=3600, description="Seconds to hold when unchanged (capped at long_poll_max_s).")
    ] = 0.0,
    if_none_match: Annotated[str | None, Header(max_length=2048)] = None,
) -> Response:
    placements: Placements = request.app.state.placements
    known = parse_if_none_match(if_none_match)
    served = await placements.current(caller.cluster_name, caller.labels)
    wait_s = min(wait, settings.long_poll_max_s)
    if _matches(served.etag, known) and wait_s > 0:
        WAITING.inc()
        try:
            served = await placements.wait_changed(caller.cluster_name, caller.labels, served.etag, wait_s)
        finally:
            WAITING.dec()
    return _answer(served, known)


@router.post("/status", status_code=204, summary="Report the apply status of placed policies")
async def post_status(report: StatusReport, caller: SpokeAuth, session: Session) -> Response:
    await record_statuses(session, caller.cluster_id, report.policies, full=False)
    await session.commit()
    return Response(status_code=204)
