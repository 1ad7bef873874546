"""What policy actions need: the cluster client, the field manager, and the policy pipeline's
checker (semantic validation for the target Tetragon version, then the blast-radius lint)."""

from __future__ import annotations

from dataclasses import dataclass

from lightkube import AsyncClient

from qcdr_response.policies.generate import Checker


@dataclass(frozen=True)
class PolicyContext:
    client: AsyncClient
    checker: Checker
    field_manager: str = "qcdr"
