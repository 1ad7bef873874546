"""``POST /federation/v1/forward``: a spoke's batch of events or findings (spoke credential)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from qcdr_common.contracts.federation.v1 import ForwardAck, ForwardBatch
from qcdr_common.logging import get_logger

from qcdr_federation.deps import Session, Settings
from qcdr_federation.hub.body import parse_body
from qcdr_federation.hub.forwarding import service
from qcdr_federation.hub.metrics import FORWARDED
from qcdr_federation.hub.spoke_auth import SpokeAuth

log = get_logger("qcdr.federation.forwarding")

router = APIRouter(prefix="/federation/v1", tags=["spoke protocol"])


@router.post(
    "/forward",
    response_model=ForwardAck,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ForwardBatch.model_json_schema()}},
        }
    },
)
async def forward(caller: SpokeAuth, request: Request, session: Session, settings: Settings) -> ForwardAck:
    """Keep each item once (by cluster, kind and id: re-sending is harmless); invalid items are
    rejected one by one (index and reason), the others accepted."""
    batch = await parse_body(request, ForwardBatch, settings.forward_max_bytes)
    ack = await service.take(session, caller, batch, datetime.now(UTC))
    await session.commit()
    relay = getattr(request.app.state, "relay", None)
    if relay is not None and ack.accepted:
        relay.notify()
    kind = batch.kind.value
    FORWARDED.labels(kind=kind, outcome="accepted").inc(ack.accepted)
    FORWARDED.labels(kind=kind, outcome="duplicate").inc(ack.duplicates)
    FORWARDED.labels(kind=kind, outcome="rejected").inc(len(ack.rejected))
    if ack.rejected:
        log.info(
            "federation_forward_rejected",
            cluster=caller.cluster_name,
            kind=kind,
            rejected=len(ack.rejected),
            first=ack.rejected[0].reason,
        )
    return ack
