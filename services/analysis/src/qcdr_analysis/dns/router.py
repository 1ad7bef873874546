"""``POST /v1/dns/classify``: the lexical DGA classifier's score for a batch of names (read scope).

Ingest's verdict API (``POST /v1/dns/verdict``) asks this endpoint when a name is on no domain feed;
SOAR tools may ask it directly. Scoring is CPU work (about 0.1 ms a name), so it runs in a worker
thread and never holds up the event loop.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.api.errors import ApiError
from qcdr_common.logging import get_logger

from qcdr_analysis.dns.classifier import classify, load_classifier, warm_classifier
from qcdr_analysis.dns.schemas import ClassifyRequest, ClassifyResponse, NameScore

router = APIRouter(prefix="/v1/dns", tags=["dns"])
log = get_logger(__name__)
__all__ = ["router", "warm_classifier"]

# Host-name characters (underscore too: SRV and DKIM names carry it), labels of 1-63 characters.
# fullmatch: "$" would also match before a trailing newline ("a\n" a label)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _canonical(raw: str) -> str | None:
    name = raw.strip().rstrip(".").lower()
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


def _score(names: list[str]) -> ClassifyResponse:
    model = load_classifier()
    verdicts = classify(names, model)
    return ClassifyResponse(
        threshold=model.threshold,
        results=[
            NameScore(
                name=v.domain,
                registered=v.registered,
                score=round(v.score, 6),
                is_dga=v.is_dga,
                reasons=list(v.reasons),
            )
            for v in verdicts
        ],
    )


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="DGA scores for up to 1,000 names",
    responses={422: {"description": "A name that is no host name (reason invalid_name)"}},
)
async def post_classify(body: ClassifyRequest, _: ReadPrincipal) -> ClassifyResponse:
    names = []
    for i, raw in enumerate(body.names):
        name = _canonical(raw)
        if name is None:
            raise ApiError(422, f"names[{i}] is not a host name: {raw[:80]!r}", reason="invalid_name")
        names.append(name)
    return await run_in_threadpool(_score, names)
