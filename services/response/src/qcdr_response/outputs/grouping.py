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
from datetime import datetime

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import uuid7
from sqlalchemy import select, text
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
    return OutputQueueRow(
        message_id=message.id,
        sink=message.sink,
        kind=message.kind.value,
        group_key=message.group_key,
        count=message.count,
        state="pending",
        payload=message.model_dump(mode="json"),
        created_at=now,
        next_attempt_at=now,
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
    """Queue ``findings`` for ``sinks``; returns the rows written or changed."""
    changed = 0
    for finding in findings:
        for config in sinks:
            if not wants(config, finding):
                continue
            gk = group_key(finding, config.group_by)
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"qcdr-output:{config.name}:{gk}"}
            )
            last = await session.scalar(
                select(OutputQueueRow)
                .where(OutputQueueRow.sink == config.name, OutputQueueRow.group_key == gk)
                .order_by(OutputQueueRow.id.desc())
                .limit(1)
                .with_for_update()
            )
            prev = OutputMessage.model_validate(last.payload) if last is not None else None
            in_window = (
                prev is not None
                and prev.kind != MessageKind.RESOLVE
                and (finding.event_time - prev.first_seen).total_seconds() <= config.group_window_s
                and finding.id not in prev.finding_ids
            )
            if last is not None and prev is not None and in_window:
                grown = prev.model_copy(
                    update={
                        "count": prev.count + 1,
                        "last_seen": max(prev.last_seen, finding.event_time),
                        "finding_ids": (*prev.finding_ids, finding.id)[-MAX_IDS:],
                    }
                )
                if last.state == "pending" and last.attempts == 0:
                    last.payload, last.count = grown.model_dump(mode="json"), grown.count
                else:
                    update = grown.model_copy(
                        update={"id": uuid7(), "kind": MessageKind.UPDATE, "created_at": now}
                    )
                    session.add(queue_row(update, now))
            else:
                message = new_message(
                    config, finding, gk, cluster_id=cluster_id, now=now, link=link_for(finding)
                )
                session.add(queue_row(message, now))
            changed += 1
    await session.flush()
    return changed
