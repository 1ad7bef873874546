"""API shapes of commands (operator side)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_LEASE_S = 30 * 86_400


def parse_lease(value: object) -> object:
    """Seconds, or ``90s`` / ``15m`` / ``2h`` / ``1d`` (as the response API accepts)."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise ValueError("a lease is seconds or a duration like 90s, 15m, 2h or 1d")
        return int(match[1]) * _UNIT_S[match[2]]
    return value


class CommandRequest(BaseModel):
    """Body of ``POST /v1/clusters/{name}/actions/{action_id}/{verb}`` (optional)."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000, description="Why (recorded on the spoke).")
    lease: int | None = Field(
        default=None, ge=1, le=MAX_LEASE_S, description="renew only: seconds or 90s / 15m / 2h / 1d."
    )

    @field_validator("lease", mode="before")
    @classmethod
    def _lease(cls, value: object) -> object:
        return parse_lease(value)


class CommandRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    cluster: str
    kind: str
    action_id: str
    reason: str | None
    lease_s: int | None
    requested_by: str
    created_at: datetime
    state: str
    delivered_at: datetime | None
    status_code: int | None
    result: Any = None
    finished_at: datetime | None


class CommandQueued(BaseModel):
    """202: the spoke has not answered yet (offline, or slower than the wait); poll the command."""

    command: CommandRead
    detail: str
