"""``GET /v1/federation``: what this instance is in the federation (every role, hub or not).

It lives with the hub's modules because the hub owns the federation's operator API; a spoke adds
its own details through ``app.state.spoke_info`` (a mapping, or a callable returning one, awaitable
or not) and a standalone instance says only that it does not federate.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from qcdr_common.api.auth import ReadPrincipal
from qcdr_common.contracts.federation.v1 import VERSION, FederationRole

from qcdr_federation.deps import Settings

router = APIRouter(tags=["federation"])


class FederationInfo(BaseModel):
    role: FederationRole
    protocol_version: int
    cluster_name: str
    hub_url: str | None = None
    heartbeat_interval_s: float | None = None
    degraded_after_s: float | None = None
    offline_after_s: float | None = None
    controller_enabled: bool | None = None
    spoke: dict[str, Any] | None = None


async def _spoke_details(request: Request) -> dict[str, Any] | None:
    source = getattr(request.app.state, "spoke_info", None)
    if source is None:
        return None
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    return dict(value) if isinstance(value, Mapping) else None


@router.get("/v1/federation", response_model=FederationInfo, response_model_exclude_none=True)
async def federation_info(request: Request, settings: Settings, _: ReadPrincipal) -> FederationInfo:
    info = FederationInfo(role=settings.role, protocol_version=VERSION, cluster_name=settings.spoke_name)
    if settings.role is FederationRole.HUB:
        info.heartbeat_interval_s = settings.heartbeat_interval_s
        info.degraded_after_s = settings.degraded_after_s
        info.offline_after_s = settings.offline_after_s
        info.controller_enabled = settings.controller_enabled
    elif settings.role is FederationRole.SPOKE:
        info.hub_url = settings.hub_url
        info.spoke = await _spoke_details(request)
    return info
