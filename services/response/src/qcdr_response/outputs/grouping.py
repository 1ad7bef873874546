"""Findings into queue rows, in the transaction that stores them.

Per sink that wants a finding (enabled, severity at least ``min_severity``), the finding's group
key is made from the sink's ``group_by`` fields. If the group's newest row is younger than the
window (counted from the group's first finding):

- and still untried (pending, no attempt yet): the finding is folded into it (count + 1, last
  seen, its id), so one message goes out with the count;
- otherwise (sent, or an attempt already went out with that content): a new ``update`` message
  with the group key and the running count; later findings fold into that one.

Else the finding starts a group with an ``alert``. One transaction at a time works on a (sink,
group) pair (advisory lock), so parallel batches never split a group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import uuid7
from sqlalchemy import insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.message import MessageKind, OutputMessage
from qcdr_response.outputs.models import OutputQueueRow

MAX_IDS = 100
_SEVERITY = {s: i for i, s in enumerate(("info", "low", "medium", "high", "critical"))}
GROUP_FIELDS: dict[str, Callable[[Finding], str]] = {
    "category": lambda f: f.category,
    "namespace": lambda f: f.workload.namespace or "",
    "pod": lambda f: f.workload.pod or "",
    "detector": lambda f: f.detector,
    "severity": lambda f: f.severity.value,
    "kind": lambda f: f.kind.value,
    "cluster": lambda f: f.workload.cluster or "",
    "image": lambda f: f.workload.image_digest or f.workload.image or "",
    "finding": lambda f: f.id,
}


def wants(config: SinkConfig, finding: Finding) -> bool:
    return config.enabled and _SEVERITY[finding.severity.value] >= _SEVERITY[config.min_severity.value]


def group_key(finding: Finding, fields: Sequence[str]) -> str:
    """Readable (``category=…|namespace=…``) when short; a hash of it past 200 characters
    (PagerDuty's dedup_key takes 255)."""
    unknown = [f for f in fields if f not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"unknown group_by field(s): {', '.join(unknown)}")
    key = "|".join(f"{f}={GROUP_FIELDS[f](finding)}" for f in fields) or f"finding={finding.id}"
    if len(key) > 200:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def new_message(
    config: SinkConfig, finding: Finding, gk: str, *, cluster_id: str, now: datetime, link: str | None
) -> OutputMessage:
    return OutputMessage(
        id=uuid7(),
        sink=config.name,
        group_key=gk,
        finding=finding,
        finding_ids=(finding.id,),
        first_seen=finding.event_time,
        last_seen=finding.event_time,
        cluster_id=cluster_id,
        created_at=now,
        link=link,
    )


def queue_row(message: OutputMessage, now: datetime) -> OutputQueueRow:
    return OutputQueueRow(**row_values(message, now))


def row_values(message: OutputMessage, now: datetime) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "sink": message.sink,
        "kind": message.kind.value,
        "group_key": message.group_key,
        "count": message.count,
        "state": "pending",
        "payload": message.model_dump(mode="json"),
        "created_at": now,
        "next_attempt_at": now,
    }


@dataclass
class _Group:
    """One (sink, group key) while a batch is queued: its newest message and whether that message
    can still change (new in this batch, or an untried row already queued)."""

    current: OutputMessage | None = None
    row_id: int | None = None  # the queued row ``current`` came from, if it may be folded into
    index: int | None = None  # ``current`` is this batch's new message at ``created[index]``
    grown: bool = False


def _grow(message: OutputMessage, finding: Finding) -> OutputMessage:
    return message.model_copy(
        update={
            "count": message.count + 1,
            "first_seen": min(message.first_seen, finding.event_time),
            "last_seen": max(message.last_seen, finding.event_time),
            "finding_ids": (*message.finding_ids, finding.id)[-MAX_IDS:],
        }
    )


async def enqueue(
    session: AsyncSession,
    sinks: Sequence[SinkConfig],
    findings: Sequence[Finding],
    *,
    cluster_id: str,
    now: datetime,
    link_for: Callable[[Finding], str | None] = lambda f: None,
) -> int:
    """Queue ``findings`` for ``sinks``; returns the (finding, sink) pairs handled.

    A batch costs a fixed handful of statements whatever its size: one to take the advisory locks
    of its groups (in a stable order, so concurrent batches cannot deadlock), one to read each
    group's newest row, one bulk insert, and one conditional update per queued row it grows."""
    wanted = [
        (config, group_key(finding, config.group_by), finding)
        for finding in findings
        for config in sinks
        if wants(config, finding)
    ]
    if not wanted:
        return 0
    pairs = sorted({(config.name, gk) for config, gk, _ in wanted})
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest(CAST(:keys AS text[])) AS k"),
        {"keys": [f"qcdr-output:{sink}:{gk}" for sink, gk in pairs]},
    )
    newest = await session.execute(
        select(
            OutputQueueRow.id,
            OutputQueueRow.sink,
            OutputQueueRow.group_key,
            OutputQueueRow.state,
            OutputQueueRow.attempts,
            OutputQueueRow.payload,
        )
        .where(tuple_(OutputQueueRow.sink, OutputQueueRow.group_key).in_(pairs))
        .order_by(OutputQueueRow.sink, OutputQueueRow.group_key, OutputQueueRow.id.desc())
        .ext(distinct_on(OutputQueueRow.sink, OutputQueueRow.group_key))
    )
    groups: dict[tuple[str, str], _Group] = {}
    for row in newest:
        prev = OutputMessage.model_validate(row.payload)
        if prev.kind == MessageKind.RESOLVE:
            continue
        untried = row.state == "pending" and row.attempts == 0
        groups[(row.sink, row.group_key)] = _Group(current=prev, row_id=row.id if untried else None)

    created: list[OutputMessage] = []
    for config, gk, finding in wanted:
        g = groups.setdefault((config.name, gk), _Group())
        cur = g.current
        if (
            cur is not None
            # both ways: a finding stamped days before the group began (a node flushing its
            # buffer, a backfill) is its own alert, not "count + 1" of today's
            and abs((finding.event_time - cur.first_seen).total_seconds()) <= config.group_window_s
            and finding.id not in cur.finding_ids
        ):
            grown = _grow(cur, finding)
            if g.index is not None or g.row_id is not None:
                g.current, g.grown = grown, True
                if g.index is not None:
                    created[g.index] = grown
                continue
            # the group went out already: the next finding makes an update with the same key
            follow_up = grown.model_copy(
                update={"id": uuid7(), "kind": MessageKind.UPDATE, "created_at": now}
            )
            created.append(follow_up)
            groups[(config.name, gk)] = _Group(current=follow_up, index=len(created) - 1)
            continue
        message = new_message(config, finding, gk, cluster_id=cluster_id, now=now, link=link_for(finding))
        created.append(message)
        groups[(config.name, gk)] = _Group(current=message, index=len(created) - 1)

    for g in groups.values():
        if g.row_id is None or not g.grown or g.current is None:
            continue
        # fold into the queued row unless a worker claimed it meanwhile (it may be on the wire)
        folded = await session.execute(
            update(OutputQueueRow)
            .where(
                OutputQueueRow.id == g.row_id,
                OutputQueueRow.state == "pending",
                OutputQueueRow.attempts == 0,
            )
            .values(payload=g.current.model_dump(mode="json"), count=g.current.count)
        )
        if not folded.rowcount:  # type: ignore[attr-defined]
            created.append(
                g.current.model_copy(update={"id": uuid7(), "kind": MessageKind.UPDATE, "created_at": now})
            )
    if created:
        await session.execute(insert(OutputQueueRow), [row_values(m, now) for m in created])
    return len(wanted)
