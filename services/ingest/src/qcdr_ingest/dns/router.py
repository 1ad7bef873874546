"""``POST /v1/dns/verdict`` and ``GET /v1/dns/verdict?name=``: is this name blocked, and why.

Scopes: both need ``read`` only: the POST asks a question with a body, it writes nothing, and the
app lists its path among the bearer middleware's ``read_paths``.

DNS queries themselves are sent as events (``POST /v1/events/dns`` and ``/v1/events/hubble``);
see docs/DNS.md for why there is no separate ``POST /v1/dns/{source}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from qcdr_common.api.auth import require_scope
from qcdr_common.api.errors import ApiError, Problem

from qcdr_ingest.dns.names import InvalidNameError
from qcdr_ingest.dns.schemas import VerdictRead, VerdictRequest
from qcdr_ingest.dns.service import DgaScorer, DomainSetCache, verdict
from qcdr_ingest.intel.state_postgres import PostgresFeedStateStore

router = APIRouter(prefix="/v1/dns", tags=["dns"])
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "Not a domain name (reason invalid_name)"}
}


def domain_cache(request: Request) -> DomainSetCache:
    """The app's domain-set cache, created on first use from the feed list create_app read."""
    cache: DomainSetCache | None = getattr(request.app.state, "dns_domains", None)
    if cache is None:
        cache = DomainSetCache(
            request.app.state.feed_specs, PostgresFeedStateStore(request.app.state.session_factory)
        )
        request.app.state.dns_domains = cache
    return cache


def dga_scorer(request: Request) -> DgaScorer | None:
    # Set by create_app when QCDR_DGA_ANALYSIS_URL is configured (tests may set their own).
    scorer: DgaScorer | None = getattr(request.app.state, "dns_dga_scorer", None)
    return scorer


CacheDep = Annotated[DomainSetCache, Depends(domain_cache)]
ScorerDep = Annotated[DgaScorer | None, Depends(dga_scorer)]


async def _answer(name: str, cache: DomainSetCache, scorer: DgaScorer | None) -> VerdictRead:
    domains = await cache.get()
    try:
        found = await verdict(name, domains, scorer)
    except InvalidNameError as exc:
        raise ApiError(422, f"not a domain name: {exc}", reason="invalid_name") from None
    return VerdictRead(
        name=found.name,
        blocked=found.blocked,
        reason=found.reason,
        threat=found.threat,
        registered_domain=found.registered_domain,
        listed=found.listed,
        feeds=list(found.feeds),
        dga_score=found.dga_score,
    )


@router.post(
    "/verdict",
    response_model=VerdictRead,
    summary="Verdict on one DNS name (blocked, reason, threat)",
    dependencies=[Depends(require_scope("read"))],
    responses=_INVALID,
)
async def post_verdict(body: VerdictRequest, cache: CacheDep, scorer: ScorerDep) -> VerdictRead:
    return await _answer(body.name, cache, scorer)


@router.get(
    "/verdict",
    response_model=VerdictRead,
    summary="Verdict on one DNS name, for read-only tokens",
    dependencies=[Depends(require_scope("read"))],
    responses=_INVALID,
)
async def get_verdict(
    name: Annotated[str, Query(min_length=1, max_length=300)], cache: CacheDep, scorer: ScorerDep
) -> VerdictRead:
    return await _answer(name, cache, scorer)
