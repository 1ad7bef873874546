"""Small ASGI apps standing in for ingest, analysis, response and admission: the real routes'
paths and answer shapes, with data a test sets, and a record of every write they were sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class FakeData:
    stats: dict[str, Any] | None = None  # None: analysis has no stats endpoint (404)
    feeds: dict[str, Any] = field(
        default_factory=lambda: {"refreshed_at": None, "changed_at": None, "cidrs": 0, "feeds": []}
    )
    findings: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    chains: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    decision_stats: dict[str, Any] | None = None
    action_stats: dict[str, Any] | None = None  # None: response has no /v1/actions/stats (404)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # services answering 503
    writes: list[tuple[str, str, Any]] = field(default_factory=list)  # (service, path, body)
    queries: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)


def _query(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        out.setdefault(key, []).append(value)
    return out


def _page(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    limit = int(request.query_params.get("limit", "100"))
    start = int(request.query_params.get("cursor", "0") or 0)
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return {"items": chunk, "next_cursor": str(start + limit) if more else None}


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"title": "Not Found", "status": 404, "detail": f"no {what}"}, status_code=404)


def build(service: str, data: FakeData) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        if service in data.down:
            return JSONResponse({"detail": "maintenance"}, status_code=503)
        data.queries.append((service, request.url.path, _query(request)))
        if request.method == "POST":
            body = await request.body()
            data.writes.append(
                (service, request.url.path, httpx.Response(200, content=body).json() if body else None)
            )
        return await call_next(request)

    if service == "ingest":

        @app.get("/v1/intel/feeds")
        async def feeds() -> Any:
            return data.feeds

        @app.get("/v1/events/{event_id}")
        async def event(event_id: str) -> Any:
            return data.events[event_id] if event_id in data.events else _not_found(f"event {event_id}")

    if service == "analysis":

        @app.get("/v1/findings/stats")
        async def stats() -> Any:
            return data.stats if data.stats is not None else _not_found("route")

        @app.get("/v1/findings")
        async def findings(request: Request) -> Any:
            items = data.findings
            for key in ("severity", "category", "kind"):
                wanted = request.query_params.getlist(key)
                if wanted:
                    items = [f for f in items if f[key] in wanted]
            for key in ("namespace", "cluster"):
                wanted = request.query_params.getlist(key)
                if wanted:
                    items = [f for f in items if f["workload"].get(key) in wanted]
            return _page(items, request)

        @app.get("/v1/findings/{finding_id}")
        async def finding(finding_id: str) -> Any:
            found = [f for f in data.findings if f["id"] == finding_id]
            return found[0] if found else _not_found(f"finding {finding_id}")

        @app.get("/v1/chains")
        async def chains(request: Request) -> Any:
            return _page(data.chains, request)

        @app.get("/v1/chains/{chain_id}")
        async def chain(chain_id: str) -> Any:
            found = [c for c in data.chains if c["id"] == chain_id]
            return found[0] if found else _not_found(f"chain {chain_id}")

    if service == "response":

        @app.get("/v1/actions/stats")
        async def action_stats() -> Any:
            return data.action_stats if data.action_stats is not None else _not_found("route")

        @app.get("/v1/actions")
        async def actions(request: Request) -> Any:
            state = request.query_params.get("state")
            items = [a for a in data.actions if state is None or a["state"] == state]
            return _page(items, request)

        @app.post("/v1/actions/{action_id}/{verb}")
        async def decide(action_id: int, verb: str) -> Any:
            found = [a for a in data.actions if a["id"] == action_id]
            return found[0] if found else _not_found(f"action {action_id}")

        @app.get("/v1/policies")
        async def policies(request: Request) -> Any:
            return _page(data.policies, request)

        @app.get("/v1/policies/{policy_id}")
        async def policy(policy_id: int) -> Any:
            found = [p for p in data.policies if p["id"] == policy_id]
            if not found:
                return _not_found(f"policy {policy_id}")
            versions = data.versions.get(str(policy_id), [])
            return {
                **found[0],
                "versions": [
                    {k: v[k] for k in ("version", "content_hash", "finding_count", "filename", "created_at")}
                    for v in versions
                ],
            }

        @app.get("/v1/policies/{policy_id}/versions/{number}")
        async def version(policy_id: int, number: int) -> Any:
            found = [v for v in data.versions.get(str(policy_id), []) if v["version"] == number]
            return found[0] if found else _not_found("version")

        @app.post("/v1/policies/{policy_id}/{verb}")
        async def policy_verb(policy_id: int, verb: str) -> Any:
            found = [p for p in data.policies if p["id"] == policy_id]
            return found[0] if found else _not_found(f"policy {policy_id}")

    if service == "admission":

        @app.get("/v1/admission/decisions/stats")
        async def decision_stats() -> Any:
            return data.decision_stats if data.decision_stats is not None else _not_found("route")

        @app.get("/v1/admission/decisions")
        async def decisions(request: Request) -> Any:
            return _page(data.decisions, request)

    return app


def transports(data: FakeData) -> dict[str, httpx.AsyncBaseTransport]:
    return {
        name: httpx.ASGITransport(app=build(name, data))
        for name in ("ingest", "analysis", "response", "admission")
    }
