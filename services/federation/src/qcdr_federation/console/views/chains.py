"""Attack chains: the list (newest first, cursor paged) and one chain as a timeline of its steps
with technique ids and names (from the analysis chain API), evidence events, confidence, clusters."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from qcdr_federation.console.web import PREFIX, ConsoleRefusedError, SessionDep, StateDep, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 50
MAX_CURSOR_CHARS = 512


@router.get("/chains")
async def chains(request: Request, session: SessionDep, state: StateDep) -> Response:
    cursor = request.query_params.get("cursor", "")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ConsoleRefusedError(400, "the cursor is too long")
    params = {"limit": str(PAGE_SIZE), **({"cursor": cursor} if cursor else {})}
    result = await state.backends.get("analysis", "/v1/chains", params)
    data: dict[str, Any] = result.data if result.ok and isinstance(result.data, dict) else {}
    return render(
        request,
        "chains.html",
        session,
        active="chains",
        errors=[] if result.ok else [result],
        items=data.get("items") or [],
        next_cursor=data.get("next_cursor"),
        paged=bool(cursor),
    )


@router.get("/chains/{chain_id}")
async def chain(chain_id: str, request: Request, session: SessionDep, state: StateDep) -> Response:
    if len(chain_id) > 200:
        raise ConsoleRefusedError(404, "no such chain")
    result = await state.backends.get("analysis", f"/v1/chains/{quote(chain_id, safe='')}")
    if result.status == 404:
        raise ConsoleRefusedError(404, f"no chain {chain_id}")
    item: dict[str, Any] = result.data if result.ok and isinstance(result.data, dict) else {}
    return render(
        request,
        "chain.html",
        session,
        active="chains",
        errors=[] if result.ok else [result],
        item=item,
    )
