"""Findings: a filterable table (severity, category, namespace, cluster, kind) paged by the
analysis API's cursor, and a detail page with the finding and its raw evidence events."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from qcdr_federation.console.backends import Result
from qcdr_federation.console.charts import SEVERITIES
from qcdr_federation.console.highlight import json_html
from qcdr_federation.console.web import PREFIX, ConsoleRefusedError, SessionDep, StateDep, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 50
KINDS = ("source", "attack_technique", "intel_match", "anomaly", "drift", "dga", "chain")
FILTERS = ("severity", "category", "namespace", "cluster", "kind")
MAX_FILTER_CHARS = 200
MAX_CURSOR_CHARS = 512
# the raw evidence shown on a finding's page (a chain's can run long; its steps link on)
MAX_EVIDENCE = 5


def _filters(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in FILTERS:
        value = request.query_params.get(key, "").strip()
        if len(value) > MAX_FILTER_CHARS:
            raise ConsoleRefusedError(400, f"the {key} filter is too long")
        if value:
            out[key] = value
    if out.get("severity") and out["severity"] not in SEVERITIES:
        raise ConsoleRefusedError(400, "unknown severity")
    if out.get("kind") and out["kind"] not in KINDS:
        raise ConsoleRefusedError(400, "unknown kind")
    return out


@router.get("/findings")
async def findings(request: Request, session: SessionDep, state: StateDep) -> Response:
    filters = _filters(request)
    cursor = request.query_params.get("cursor", "")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ConsoleRefusedError(400, "the cursor is too long")
    params: dict[str, str] = {**filters, "limit": str(PAGE_SIZE)}
    if cursor:
        params["cursor"] = cursor
    result = await state.backends.get("analysis", "/v1/findings", params)
    data: dict[str, Any] = result.data if result.ok and isinstance(result.data, dict) else {}
    items = data.get("items") or []
    next_cursor = data.get("next_cursor")
    return render(
        request,
        "findings.html",
        session,
        active="findings",
        errors=[] if result.ok else [result],
        items=items,
        filters=filters,
        severities=SEVERITIES,
        kinds=KINDS,
        next_params={**filters, "cursor": next_cursor} if next_cursor else None,
        first_params=filters if cursor else None,
    )


@router.get("/findings/{finding_id}")
async def finding(finding_id: str, request: Request, session: SessionDep, state: StateDep) -> Response:
    if len(finding_id) > 200:
        raise ConsoleRefusedError(404, "no such finding")
    result = await state.backends.get("analysis", f"/v1/findings/{quote(finding_id, safe='')}")
    if result.status == 404:
        raise ConsoleRefusedError(404, f"no finding {finding_id}")
    errors: list[Result] = [] if result.ok else [result]
    item: dict[str, Any] = result.data if result.ok and isinstance(result.data, dict) else {}
    events: list[tuple[str, Any]] = []
    for event_id in list(item.get("evidence_event_ids") or [])[:MAX_EVIDENCE]:
        event = await state.backends.get("ingest", f"/v1/events/{quote(str(event_id), safe='')}")
        if event.ok:
            events.append((event_id, json_html(event.data)))
        elif event.status == 404:
            events.append((event_id, None))
        else:
            errors.append(event)
            break
    return render(
        request,
        "finding.html",
        session,
        active="findings",
        errors=errors,
        finding_id=finding_id,
        item=item,
        finding_html=json_html(item) if item else None,
        events=events,
        more_events=max(0, len(item.get("evidence_event_ids") or []) - MAX_EVIDENCE),
    )
