"""``SecurityEvent`` v1: one normalized runtime-security observation, whatever its source.

Sources (Qualys CDR, Tetragon, Falco, ...) map their own shapes onto this one so that analysis and
response never see vendor fields except through ``raw``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

VERSION = 1


class Severity(StrEnum):
    """Severity on one scale for every source (ordered lowest to highest)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class ProcessInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    path: str | None = None
    pid: int | None = Field(default=None, ge=0)
    parent_path: str | None = None


class NetworkDestination(BaseModel):
    """The remote end of a connection the workload made (never the victim resource)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ip: IPv4Address | IPv6Address | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    domain: str | None = Field(default=None, max_length=253)


class Workload(BaseModel):
    """Where the event happened. A workload is its owner plus image, not the pod name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: str | None = None
    namespace: str | None = None
    owner_kind: str | None = None
    owner_name: str | None = None
    pod: str | None = None
    container: str | None = None
    container_id: str | None = None
    image: str | None = None
    image_digest: str | None = None


class SecurityEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=200, description="Source-stable id (the idempotency key).")
    source: str = Field(min_length=1, max_length=40)
    category: str = Field(min_length=1, max_length=200)
    severity: Severity
    event_time: AwareDatetime
    message: str | None = None
    workload: Workload = Field(default_factory=Workload)
    process: ProcessInfo | None = None
    network: NetworkDestination | None = None
    techniques: tuple[str, ...] = ()
    raw: dict[str, Any] = Field(default_factory=dict)

    @field_validator("techniques")
    @classmethod
    def _techniques_are_attack_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for technique in value:
            if not _is_technique_id(technique):
                raise ValueError(f"not a MITRE ATT&CK technique id: {technique!r}")
        return tuple(sorted(set(value)))

    @property
    def occurred_at(self) -> datetime:
        return self.event_time


def _is_technique_id(value: str) -> bool:
    # T1234 or T1234.001
    if len(value) not in (5, 9) or value[0] != "T" or not value[1:5].isdigit():
        return False
    return len(value) == 5 or (value[5] == "." and value[6:].isdigit())
