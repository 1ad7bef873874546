"""Shapes of ``GET /v1/federation/spoke``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class HeldPolicyRead(BaseModel):
    policy_id: str
    name: str
    generation: int
    content_hash: str
    enforce: bool
    api_version: str
    kind: str
    namespace: str | None
    manifest_name: str
    received_at: datetime
    state: str = Field(description="pending, proposed, approved, applied, failed or revoked.")
    message: str | None
    observed_at: datetime | None
    reported_at: datetime | None = Field(description="When the hub was told (null: not yet).")


class SpokeRead(BaseModel):
    registered: bool
    cluster_id: str | None
    cluster_name: str
    hub_url: str
    registered_at: datetime | None
    credential_id: str | None = Field(description="The credential's id (never the secret).")
    credential_issued_at: datetime | None
    hub_up: bool | None = Field(description="Null when the agent does not run in this process.")
    last_contact_at: datetime | None
    hub_unreachable_since: datetime | None
    last_error: str | None
    heartbeat_interval_s: float | None
    policies_etag: str | None
    baselines_cursor: str | None
    problems: list[str]
    counts: dict[str, int]
    policies: list[HeldPolicyRead]
