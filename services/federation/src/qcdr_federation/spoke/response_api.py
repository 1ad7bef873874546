"""The spoke's client of its own cluster's response API: the actions waiting for approval (and
running leases) for the heartbeat, and approve / reject / undo / renew for the hub users' commands.

Bearer ``response_token`` (or the file, read again on each call so a rotated Secret is picked up).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import CommandKind, CommandResult, PendingAction, SpokeCommand
from qcdr_common.logging import get_logger

from qcdr_federation.settings import FederationSettings

log = get_logger(__name__)

MAX_ACTIONS = 1000
_EXTRA_FIELDS = ("reason", "requested_by", "require_approval", "lease_seconds", "playbook", "node")


class ResponseApiError(Exception):
    """The response API did not answer, or answered an error (``status``)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _token(settings: FederationSettings) -> str | None:
    if settings.response_token_file is not None:
        try:
            text = settings.response_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.warning(
                "federation_response_token_unreadable",
                path=str(settings.response_token_file),
                error=exc.strerror,
            )
        else:
            if text:
                return text
    if settings.response_token is not None:
        return settings.response_token.get_secret_value().strip() or None
    return None


def to_pending_action(item: dict[str, Any]) -> PendingAction | None:
    """An ``ActionRead`` of the response API as the heartbeat carries it (None if unusable)."""
    try:
        extra = {k: item[k] for k in _EXTRA_FIELDS if k in item}
        return PendingAction(
            action_id=str(item["id"]),
            action=str(item["action"]),
            state=str(item["state"]),
            target=item.get("target") or {},
            finding_id=item.get("finding_id"),
            requested_at=item.get("created_at"),
            lease_expires_at=item.get("lease_expires_at"),
            **extra,
        )
    except (KeyError, TypeError, ValidationError):
        return None


class ResponseApi:
    def __init__(
        self, settings: FederationSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(
            base_url=settings.response_url.rstrip("/"),
            timeout=httpx.Timeout(settings.http_timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        token = _token(self.settings)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _list(self, state: str) -> list[dict[str, Any]]:
        try:
            response = await self._http.get(
                "/v1/actions", params={"state": state, "limit": MAX_ACTIONS}, headers=self._headers()
            )
        except httpx.TransportError as exc:
            raise ResponseApiError(f"response API unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ResponseApiError(
                f"response API answered {response.status_code} to GET /v1/actions",
                status=response.status_code,
            )
        try:
            items = response.json()["items"]
        except (ValueError, KeyError, TypeError):
            raise ResponseApiError("response API answered an unexpected body to GET /v1/actions") from None
        return [i for i in items if isinstance(i, dict)]

    async def pending_actions(self) -> list[PendingAction]:
        """Actions waiting for approval, then succeeded containments whose lease still runs."""
        now = datetime.now(UTC)
        actions: list[PendingAction] = []
        for item in await self._list("pending"):
            action = to_pending_action(item)
            if action is not None:
                actions.append(action)
        for item in await self._list("succeeded"):
            action = to_pending_action(item)
            if action is not None and action.lease_expires_at is not None and action.lease_expires_at > now:
                actions.append(action)
        return actions[:MAX_ACTIONS]

    async def run_command(self, command: SpokeCommand) -> CommandResult:
        """Call the response API for a hub user's command; its answer (status, body) is the result.
        A response API that does not answer gives 503 with the reason."""
        if command.kind is CommandKind.RENEW:
            body: dict[str, Any] | None = {"lease": command.lease_s} if command.lease_s else None
        else:
            body = {"note": command.reason or ""}
        path = f"/v1/actions/{quote(command.action_id, safe='')}/{command.kind.value}"
        try:
            response = await self._http.post(path, json=body, headers=self._headers())
        except httpx.TransportError as exc:
            return CommandResult(
                status_code=503,
                body={
                    "type": "about:blank",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": f"the spoke's response API did not answer: {type(exc).__name__}",
                    "reason": "response_unavailable",
                },
            )
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text or None
        status = response.status_code if 100 <= response.status_code <= 599 else 502
        return CommandResult(status_code=status, body=answer)
