"""Overview: findings by severity and category over the last day (an SVG chart), top namespaces
and images, feed freshness and open approvals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from qcdr_federation.console.backends import Result
from qcdr_federation.console.charts import COLORS, OTHER, SEVERITIES, category_colors, stacked_bars
from qcdr_federation.console.web import PREFIX, SessionDep, StateDep, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)

# the windows the page offers: (label, length, chart bucket)
WINDOWS = {
    "24h": ("last 24 hours", timedelta(hours=24), "hour"),
    "7d": ("last 7 days", timedelta(days=7), "day"),
    "30d": ("last 30 days", timedelta(days=30), "day"),
}
PENDING_PAGE = 1000


def _list(value: Any, key: str) -> list[Any]:
    items = value.get(key) if isinstance(value, dict) else None
    return items if isinstance(items, list) else []


@router.get("")
async def root() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/")
async def overview(request: Request, session: SessionDep, state: StateDep) -> Response:
    window = request.query_params.get("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    label, length, bucket = WINDOWS[window]
    since = (datetime.now(UTC) - length).isoformat()
    backends = state.backends
    # the three services answer independently: ask them at once
    stats, feeds, pending, reaction = await asyncio.gather(
        backends.get("analysis", "/v1/findings/stats", {"since": since, "bucket": bucket}),
        backends.get("ingest", "/v1/intel/feeds"),
        backends.get("response", "/v1/actions", {"state": "pending", "limit": str(PENDING_PAGE)}),
        backends.get("response", "/v1/actions/stats", {"since": since}),
    )
    errors: list[Result] = [r for r in (feeds, pending) if not r.ok]
    stats_missing = stats.status == 404
    if not stats.ok and not stats_missing:
        errors.insert(0, stats)
    data: dict[str, Any] = stats.data if stats.ok and isinstance(stats.data, dict) else {}
    by_severity = data.get("by_severity") if isinstance(data.get("by_severity"), dict) else {}
    pending_items = _list(pending.data, "items") if pending.ok else []
    # the categories the series carries (analysis keeps the range's largest, the rest as "other")
    seen = [
        c
        for bucket in _list(data, "series")
        if isinstance(bucket, dict) and isinstance(bucket.get("categories"), dict)
        for c in bucket["categories"]
    ]
    ordered = [
        c["category"] for c in _list(data, "by_category") if isinstance(c, dict) and c.get("category") in seen
    ]
    category_legend = category_colors([*dict.fromkeys(ordered), *([OTHER] if OTHER in seen else [])])
    category_chart = (
        stacked_bars(_list(data, "series"), field="categories", colors=category_legend) if seen else None
    )
    return render(
        request,
        "overview.html",
        session,
        active="overview",
        window=window,
        window_label=label,
        windows=[(key, value[0]) for key, value in WINDOWS.items()],
        errors=errors,
        stats=data,
        stats_missing=stats_missing,
        severities=[(s, int((by_severity or {}).get(s, 0) or 0)) for s in SEVERITIES],
        colors=COLORS,
        chart=stacked_bars(_list(data, "series")),
        category_chart=category_chart,
        category_legend=category_legend,
        by_category=_list(data, "by_category"),
        top_namespaces=_list(data, "top_namespaces"),
        top_images=_list(data, "top_images"),
        feeds=_list(feeds.data, "feeds") if feeds.ok else [],
        feeds_refreshed=feeds.data.get("refreshed_at") if feeds.ok and isinstance(feeds.data, dict) else None,
        # detection -> action (finding event time to the action's request / end); absent from an
        # older response service, which is not an error worth a box
        reaction=reaction.data if reaction.ok and isinstance(reaction.data, dict) else None,
        pending_count=len(pending_items) if pending.ok else None,
        pending_more=bool(pending.ok and isinstance(pending.data, dict) and pending.data.get("next_cursor")),
    )
