"""What a sink is asked to deliver: one message about a finding (or a group of findings with the
same group key), independent of any sink's format."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from qcdr_common.contracts.findings.v1 import Finding


class MessageKind(StrEnum):
    ALERT = "alert"  # the first message of a group
    UPDATE = "update"  # the group grew after its first message went out (carries the group key)
    RESOLVE = "resolve"  # the finding was closed through the API (PagerDuty resolves its incident)
    TEST = "test"  # `qcdr outputs test SINK`


class OutputMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="The delivery id: the idempotency key, the same on every retry.")
    sink: str = Field(description="The configured sink's name.")
    kind: MessageKind = MessageKind.ALERT
    group_key: str = Field(description="Findings with this key within the window are one message.")
    count: int = Field(default=1, ge=1, description="Findings in the group when the message was made.")
    finding: Finding = Field(description="The group's first finding (for a chain: the chain).")
    finding_ids: tuple[str, ...] = Field(default=(), description="Up to 100 ids of the group's findings.")
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    cluster_id: str
    created_at: AwareDatetime
    link: str | None = Field(default=None, description="Where a person can look (console URL).")

    @property
    def severity(self) -> str:
        return self.finding.severity.value

    @property
    def title(self) -> str:
        f = self.finding
        base = f.title or f.category
        return f"{base} (x{self.count})" if self.count > 1 else base

    def summary(self) -> str:
        """One line for text sinks: severity, title, where."""
        w = self.finding.workload
        where = "/".join(p for p in (w.cluster or self.cluster_id, w.namespace, w.pod) if p)
        return f"[{self.severity.upper()}] {self.title} on {where}"


def age_seconds(message: OutputMessage, now: datetime) -> float:
    return (now - message.created_at).total_seconds()


def when(value: datetime) -> str:
    """``2026-12-06 17:30:00 UTC``: the time chat messages show (``%Y`` does not pad years < 1000)."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}" + value.strftime("-%m-%d %H:%M:%S UTC")
