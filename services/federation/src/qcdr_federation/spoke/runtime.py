"""What the running agent knows about itself right now (in memory, shared by its loops): contact
with the hub, the problems to report in the next heartbeat, and counters. The durable part
(registration, etags, cursors, statuses) is in the database; this is what the heartbeat, the
metrics and ``GET /v1/federation/spoke`` add to it.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qcdr_common.logging import get_logger

from qcdr_federation.settings import MAX_HEARTBEAT_INTERVAL_S, MIN_HEARTBEAT_INTERVAL_S, FederationSettings
from qcdr_federation.spoke.client import HubError, HubErrorKind
from qcdr_federation.spoke.metrics import HUB_UP, LAST_CONTACT

log = get_logger(__name__)

MAX_PROBLEMS = 50
MAX_PROBLEM_CHARS = 500

# problem keys (one entry each, replaced when it changes, dropped when it is over)
HUB_UNREACHABLE = "hub"
RESPONSE_API = "response_api"
BASELINES_VIEW = "baselines_view"
REGISTRATION = "registration"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_replica_id() -> str:
    """This process among the spoke's replicas: the pod's name (HOSTNAME), the process and a
    random part (a restarted process is a new replica; its counters start again)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass
class AgentState:
    cluster_name: str
    hub_url: str
    heartbeat_interval_s: float
    cluster_id: str | None = None
    registered: bool = False
    last_contact_at: datetime | None = None
    hub_unreachable_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    problems: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    replica_id: str = field(default_factory=new_replica_id)

    @classmethod
    def from_settings(cls, settings: FederationSettings) -> AgentState:
        assert settings.hub_url is not None
        return cls(
            cluster_name=settings.spoke_name,
            hub_url=settings.hub_url,
            heartbeat_interval_s=settings.heartbeat_interval_s,
        )

    def take_heartbeat_interval(self, told: float) -> None:
        """The interval the hub told (registration, heartbeat ack), clamped into the range a hub can
        be configured with: a huge one overflowed "three intervals ago" (the status route a 500)
        and stopped the heartbeats; one that is no number is ignored."""
        if math.isnan(told):
            log.warning("federation_heartbeat_interval_ignored", told=repr(told))
            return
        interval = min(max(told, MIN_HEARTBEAT_INTERVAL_S), MAX_HEARTBEAT_INTERVAL_S)
        if interval != told and interval != self.heartbeat_interval_s:
            log.warning(
                "federation_heartbeat_interval_clamped",
                told=repr(told),
                interval=interval,
                range=f"{MIN_HEARTBEAT_INTERVAL_S:g}..{MAX_HEARTBEAT_INTERVAL_S:g} s",
            )
        self.heartbeat_interval_s = interval

    # ------------------------------------------------------------------ contact with the hub

    def contact_ok(self) -> None:
        """The hub answered (any answer but a transport failure or a 5xx)."""
        now = utcnow()
        if self.hub_unreachable_since is not None:
            log.info("federation_hub_reachable_again", down_since=self.hub_unreachable_since.isoformat())
        self.last_contact_at = now
        self.hub_unreachable_since = None
        self.problems.pop(HUB_UNREACHABLE, None)
        HUB_UP.set(1)
        LAST_CONTACT.set(now.timestamp())

    def contact_failed(self, error: HubError) -> None:
        now = utcnow()
        self.last_error = error.describe()
        self.last_error_at = now
        if error.kind in (HubErrorKind.UNREACHABLE, HubErrorKind.SERVER):
            if self.hub_unreachable_since is None:
                self.hub_unreachable_since = now
                log.warning("federation_hub_unreachable", error=self.last_error)
            since = self.hub_unreachable_since.isoformat()
            self.problems[HUB_UNREACHABLE] = f"hub unreachable since {since}: {self.last_error}"
            HUB_UP.set(0)
        else:  # the hub answered, it just did not like the request
            self.contact_ok()
            self.last_error = error.describe()
            self.last_error_at = now

    @property
    def hub_up(self) -> bool:
        return self.last_contact_at is not None and self.hub_unreachable_since is None

    # ------------------------------------------------------------------ problems

    def set_problem(self, key: str, text: str) -> None:
        self.problems[key] = text[:MAX_PROBLEM_CHARS]

    def clear_problem(self, key: str) -> None:
        self.problems.pop(key, None)

    def problem_list(self) -> tuple[str, ...]:
        return tuple(text[:MAX_PROBLEM_CHARS] for _, text in sorted(self.problems.items()))[:MAX_PROBLEMS]

    def snapshot(self) -> dict[str, Any]:
        """The in-memory part of the spoke's status (JSON-ready)."""
        return {
            "registered": self.registered,
            "cluster_id": self.cluster_id,
            "cluster_name": self.cluster_name,
            "hub_url": self.hub_url,
            "hub_up": self.hub_up,
            "last_contact_at": _iso(self.last_contact_at),
            "hub_unreachable_since": _iso(self.hub_unreachable_since),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "problems": list(self.problem_list()),
            "counts": dict(self.counts),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
