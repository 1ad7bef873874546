"""``GET /v1/actions/stats``: how fast findings turn into actions (the console's overview).

Detection → action is measured from the finding's event time (when the behaviour happened) to the
action's request (``created_at``) and to its end (``finished_at``), for actions that name a finding;
one SQL pass with ``percentile_cont`` over the actions requested in the window.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_STATS = text(
    """
    SELECT count(*) AS actions,
           count(a.finding_id) AS from_findings,
           count(*) FILTER (WHERE a.state = 'pending') AS pending,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.created_at - f.event_time))
               AS requested_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM a.created_at - f.event_time))
               AS requested_p95,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.finished_at - f.event_time))
               AS finished_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM a.finished_at - f.event_time))
               AS finished_p95
    FROM response_actions a
    LEFT JOIN response_findings f ON f.id = a.finding_id
    WHERE a.created_at >= :since AND a.created_at < :until
    """
)


class ActionStats(BaseModel):
    since: datetime
    until: datetime
    actions: int = Field(description="Actions requested in the window.")
    from_findings: int = Field(description="Of those, requested for a finding (playbooks, or by hand).")
    pending: int = Field(description="Of those, still waiting for approval.")
    requested_p50_s: float | None = Field(description="Finding event time → action requested, median.")
    requested_p95_s: float | None
    finished_p50_s: float | None = Field(description="Finding event time → action finished, median.")
    finished_p95_s: float | None


def _seconds(value: object) -> float | None:
    return None if value is None else round(float(str(value)), 3)


async def action_stats(session: AsyncSession, since: datetime, until: datetime) -> ActionStats:
    row = (await session.execute(_STATS, {"since": since, "until": until})).one()
    return ActionStats(
        since=since,
        until=until,
        actions=int(row.actions),
        from_findings=int(row.from_findings),
        pending=int(row.pending),
        requested_p50_s=_seconds(row.requested_p50),
        requested_p95_s=_seconds(row.requested_p95),
        finished_p50_s=_seconds(row.finished_p50),
        finished_p95_s=_seconds(row.finished_p95),
    )
