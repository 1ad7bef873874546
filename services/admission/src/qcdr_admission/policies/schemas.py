"""API shapes of ``/v1/admission/policies``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from qcdr_admission.policies.model import AdmissionPolicy


class PolicyRead(BaseModel):
    # a stored policy that no longer validates (a check removed in an upgrade) is its stored JSON
    # as it is, with ``invalid`` saying why: the engine skips it; PUT fixes it, DELETE removes it
    policy: AdmissionPolicy | dict[str, Any]
    invalid: str | None = None
    built_in: bool  # a built-in policy (not stored, or stored under a built-in's name)
    stored: bool
    version: int | None  # None for a built-in that was never stored
    generation: int | None
    updated_at: datetime | None
    updated_by: str | None


class PolicyList(BaseModel):
    generation: int  # the stored set's generation
    loaded_generation: int  # what this replica evaluates with (-1: not loaded yet)
    items: list[PolicyRead]
