"""Admission: denials by check, namespace and image from the admission decision log (its stats
endpoint; without it, counted from the latest denials), and the latest denials themselves."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from qcdr_federation.console.backends import Result
from qcdr_federation.console.web import PREFIX, ConsoleRefusedError, SessionDep, StateDep, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RECENT = 50
# without the stats endpoint the breakdown is counted from this many latest denials
FALLBACK_SAMPLE = 1000
TOP = 20


def _pairs(value: Any) -> list[dict[str, Any]]:
    return [i for i in value if isinstance(i, dict)] if isinstance(value, list) else []


def _count(denials: list[dict[str, Any]]) -> dict[str, Any]:
    checks: Counter[str] = Counter()
    namespaces: Counter[str] = Counter()
    images: Counter[str] = Counter()
    for d in denials:
        # keyed "<source>/<check>" like the stats endpoint; a decision counts once per check
        enforced = d.get("violations") or []
        for key in {f"{v.get('source')}/{v.get('check')}" for v in enforced if v.get("mode") == "enforce"}:
            checks[key] += 1
        namespaces[d.get("namespace") or "(cluster)"] += 1
        for image in set(d.get("images") or []):
            images[image] += 1

    def top(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"key": k, "count": n} for k, n in counter.most_common(TOP)]

    return {
        "total": None,
        "denied": len(denials),
        "by_check": top(checks),
        "by_namespace": top(namespaces),
        "by_image": top(images),
    }


@router.get("/admission")
async def admission(request: Request, session: SessionDep, state: StateDep) -> Response:
    window = request.query_params.get("window", "24h")
    if window not in WINDOWS:
        raise ConsoleRefusedError(400, "unknown window")
    since = (datetime.now(UTC) - WINDOWS[window]).isoformat()
    backends = state.backends
    errors: list[Result] = []
    stats = await backends.get("admission", "/v1/admission/decisions/stats", {"since": since})
    recent = await backends.get(
        "admission", "/v1/admission/decisions", {"allowed": "false", "since": since, "limit": str(RECENT)}
    )
    sampled = False
    data: dict[str, Any] = {}
    if stats.ok and isinstance(stats.data, dict):
        data = stats.data
    elif stats.status == 404:
        sample = await backends.get(
            "admission",
            "/v1/admission/decisions",
            {"allowed": "false", "since": since, "limit": str(FALLBACK_SAMPLE)},
        )
        if sample.ok and isinstance(sample.data, dict):
            data = _count(_pairs(sample.data.get("items")))
            sampled = True
        else:
            errors.append(sample)
    else:
        errors.append(stats)
    if not recent.ok and recent not in errors:
        errors.append(recent)
    return render(
        request,
        "admission.html",
        session,
        active="admission",
        errors=errors,
        window=window,
        windows=list(WINDOWS),
        stats=data,
        sampled=sampled,
        by_check=_pairs(data.get("by_check")),
        by_namespace=_pairs(data.get("by_namespace")),
        by_image=_pairs(data.get("by_image")),
        recent=_pairs(recent.data.get("items")) if recent.ok and isinstance(recent.data, dict) else [],
    )
