"""``GET /v1/dns/resolve-deny``: the resolve-and-deny loop's mode and its last refresh (read scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from qcdr_common.api.auth import ReadPrincipal

from qcdr_response.deps import Session, Settings
from qcdr_response.dns.service import last_report

router = APIRouter(prefix="/v1/dns", tags=["dns"])


class ResolveDenyStatus(BaseModel):
    mode: str = Field(description="off, files or apply (QCDR_DNS_RESOLVE_DENY).")
    refresh_s: float
    addresses: int = Field(description="Addresses in the cache (denied until their TTL ends).")
    last_refresh: dict[str, Any] | None = Field(
        description="What the last refresh found, wrote and applied; null before the first."
    )


@router.get("/resolve-deny", response_model=ResolveDenyStatus)
async def resolve_deny_status(session: Session, settings: Settings, _: ReadPrincipal) -> ResolveDenyStatus:
    found = await last_report(session)
    report, addresses = found if found is not None else (None, 0)
    return ResolveDenyStatus(
        mode=settings.dns_resolve_deny.value,
        refresh_s=settings.dns_refresh_s,
        addresses=addresses,
        last_refresh=report,
    )
