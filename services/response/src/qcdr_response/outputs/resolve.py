"""Closing a finding through the API: a ``resolve`` message per sink that was told about the
finding's group, with the same group key (PagerDuty resolves the incident it deduplicated on)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from qcdr_common.contracts.findings.v1 import Finding
from qcdr_common.streams.envelope import uuid7
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qcdr_response.outputs.base import SinkConfig
from qcdr_response.outputs.grouping import group_key, queue_row
from qcdr_response.outputs.message import MessageKind, OutputMessage
from qcdr_response.outputs.models import OutputQueueRow


async def enqueue_resolve(
    session: AsyncSession, sinks: Sequence[SinkConfig], finding: Finding, *, cluster_id: str
) -> list[str]:
    """Queue resolves; returns the sinks that get one (those that queued the group before)."""
    now = datetime.now(UTC)
    told: list[str] = []
    for config in sinks:
        if not config.enabled:
            continue
        gk = group_key(finding, config.group_by)
        last = await session.scalar(
            select(OutputQueueRow)
            .where(OutputQueueRow.sink == config.name, OutputQueueRow.group_key == gk)
            .order_by(OutputQueueRow.id.desc())
            .limit(1)
        )
        if last is None or last.kind == MessageKind.RESOLVE.value:
            continue
        prev = OutputMessage.model_validate(last.payload)
        message = prev.model_copy(update={"id": uuid7(), "kind": MessageKind.RESOLVE, "created_at": now})
        session.add(queue_row(message, now))
        told.append(config.name)
    await session.flush()
    return told
