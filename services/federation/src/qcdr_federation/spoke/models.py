"""The spoke's own state (owner: the federation service, spoke role), kept in the spoke cluster's
database: its registration and credential, the last good policy set the hub placed on it, what
its response service made of each policy, which baselines it already shared, the hub users'
commands it ran (so a command the hub hands out again does not run again on another replica), and
what each of its replicas counted and found wrong (so every heartbeat tells the same story).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Integer, SmallInteger, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from qcdr_federation.db.base import FederationBase

STATE_ROW_ID = 1


class SpokeStateRow(FederationBase):
    """One row: who this spoke is at its hub and where its pulls stand.

    ``credential`` is the secret itself (``<credential id>.<secret>``), not a hash: the spoke must
    present it. This database belongs to the spoke's own cluster, which is where Open Cluster
    Management's klusterlet keeps its hub kubeconfig too (a Secret in the managed cluster); only
    the hub keeps a hash. It is never logged nor served by the API.
    """

    __tablename__ = "federation_spoke_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=STATE_ROW_ID)
    cluster_name: Mapped[str] = mapped_column(Text, nullable=False)
    hub_url: Mapped[str] = mapped_column(Text, nullable=False)
    cluster_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    credential_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    credential: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # when the credential in hand was issued (registration or rotation): rotated before it gets old
    credential_issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    policies_etag: Mapped[str | None] = mapped_column(Text, nullable=True)
    baselines_cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the number of the last placed set applied; its policy messages carry it (policies.py)
    policy_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    last_contact_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (CheckConstraint(f"id = {STATE_ROW_ID}", name="one_row"),)


class SpokePolicyRow(FederationBase):
    """One policy of the last good set the hub placed on this spoke (as rendered for it)."""

    __tablename__ = "federation_spoke_policies"

    policy_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    enforce: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # the manifest's identity: what the response service knows the policy by (and what a removal names)
    api_version: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    namespace: Mapped[str | None] = mapped_column(Text, nullable=True)
    manifest_name: Mapped[str] = mapped_column(Text, nullable=False)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class SpokePolicyStatusRow(FederationBase):
    """What the spoke's response service made of a held policy (PolicyApplyStatus), and whether the
    hub has been told: unreported while ``reported_at`` is null."""

    __tablename__ = "federation_spoke_policy_status"

    policy_id: Mapped[str] = mapped_column(Text, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SpokeBaselineRow(FederationBase):
    """A profile this spoke uploaded, at which generation (only newer generations go up again)."""

    __tablename__ = "federation_spoke_baselines"

    profile_key: Mapped[str] = mapped_column(Text, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uploaded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class SpokeCommandResultRow(FederationBase):
    """A hub user's command this spoke took on: claimed by the replica that runs it (``started_at``)
    and, once the response API answered, its result. Shared by the spoke's replicas: the hub hands a
    command out again when its result did not arrive (the replica died before posting it), and the
    replica that gets it then posts the stored result instead of running the command a second time
    (an approve would answer 409, a renew would extend the lease again)."""

    __tablename__ = "federation_spoke_command_results"

    command_id: Mapped[str] = mapped_column(Text, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    status_code: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    body: Mapped[Any] = mapped_column(JSONB(none_as_null=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SpokeReplicaRow(FederationBase):
    """What one agent process (a replica of the spoke) counted and finds wrong, as of its last
    heartbeat. Every replica heartbeats; each heartbeat carries the counts summed and the problems
    joined over the replicas seen lately, so the hub's view does not flip with whichever replica
    spoke last."""

    __tablename__ = "federation_spoke_replicas"

    replica_id: Mapped[str] = mapped_column(Text, primary_key=True)
    counts: Mapped[dict[str, int]] = mapped_column(JSONB, nullable=False)
    problems: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
