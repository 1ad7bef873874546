"""The spoke's HTTP client of its hub: one typed method per spoke-facing route, the credential as
a bearer token, TLS checked against ``hub_ca_file`` (optionally with a client certificate), and
every failure classified so the loops know whether to wait, re-register or give up on a batch.

Neither the credential nor a bootstrap token ever reaches a log line or an exception message:
they travel only in the ``Authorization`` header and the register body.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError
from qcdr_common.contracts.federation.v1 import (
    BaselineUpload,
    ClusterHeartbeat,
    CommandResult,
    ForwardAck,
    ForwardBatch,
    HeartbeatAck,
    PlacedPolicySet,
    RegisterRequest,
    RegisterResponse,
    SharedBaseline,
    SpokeCommand,
    StatusReport,
)

from qcdr_federation.settings import FederationSettings

API = "/federation/v1"
_MAX_DETAIL = 300


def agent_version() -> str:
    try:
        return package_version("qcdr-federation")
    except PackageNotFoundError:  # run from a source tree without metadata
        return "0.0.0"


class HubErrorKind(StrEnum):
    UNREACHABLE = "unreachable"  # no answer: connection refused, DNS, TLS, timeout
    UNAUTHORIZED = "unauthorized"  # 401: the credential (or bootstrap token) is not accepted
    CLIENT = "client"  # another 4xx: the request itself is wrong
    SERVER = "server"  # 5xx, or an answer that does not parse


class HubError(Exception):
    """A failed call to the hub. ``credential_id``: the credential the call carried, so a 401 drops
    that credential only (not one a concurrent rotation just stored)."""

    def __init__(
        self,
        kind: HubErrorKind,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        credential_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.reason = reason
        self.credential_id = credential_id

    @property
    def retryable(self) -> bool:
        """Worth trying the same request again later (the hub was away or failed, not the request)."""
        return self.kind in (HubErrorKind.UNREACHABLE, HubErrorKind.SERVER, HubErrorKind.UNAUTHORIZED)

    def describe(self) -> str:
        parts = [f"hub {self.kind.value}"]
        if self.status is not None:
            parts.append(str(self.status))
        if self.reason:
            parts.append(self.reason)
        return f"{' '.join(parts)}: {self}"


@dataclass(frozen=True)
class Credential:
    credential_id: str
    secret: SecretStr  # the whole ``<id>.<secret>`` string


@dataclass(frozen=True)
class BaselinePage:
    items: list[SharedBaseline]
    next: str | None
    more: bool | None = None  # the hub says whether more wait after this page (None: not said)


def ssl_context(settings: FederationSettings) -> ssl.SSLContext | bool:
    """System CAs unless ``hub_ca_file`` is set; a client certificate when one is configured."""
    if settings.hub_ca_file is None and settings.client_cert_file is None:
        return True
    context = ssl.create_default_context(
        cafile=str(settings.hub_ca_file) if settings.hub_ca_file is not None else None
    )
    if settings.client_cert_file is not None:
        key = str(settings.client_key_file) if settings.client_key_file is not None else None
        context.load_cert_chain(str(settings.client_cert_file), key)
    return context


def _problem(response: httpx.Response) -> tuple[str | None, str]:
    """(reason, detail) from a problem-details body, or what can be said about another body."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:_MAX_DETAIL] or response.reason_phrase
    if isinstance(body, Mapping):
        reason = body.get("reason")
        detail = body.get("detail") or body.get("title") or ""
        return (str(reason) if reason else None), str(detail)[:_MAX_DETAIL]
    return None, str(body)[:_MAX_DETAIL]


class HubClient:
    def __init__(
        self, settings: FederationSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if settings.hub_url is None:
            raise ValueError("the spoke needs FEDERATION_HUB_URL")
        self.hub_url = settings.hub_url
        self.timeout_s = settings.http_timeout_s
        self.credential: Credential | None = None
        self._http = httpx.AsyncClient(
            base_url=settings.hub_url,
            verify=ssl_context(settings),
            timeout=httpx.Timeout(settings.http_timeout_s),
            transport=transport,
            headers={"User-Agent": f"qcdr-federation-spoke/{agent_version()}"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        authenticated: bool = True,
        not_modified: bool = False,
    ) -> httpx.Response:
        """The hub's 2xx answer (or 304 where ``not_modified``); HubError for anything else."""
        send_headers = dict(headers or {})
        credential = self.credential
        if authenticated:
            if credential is None:
                raise HubError(
                    HubErrorKind.UNAUTHORIZED, "no credential: not registered", reason="missing_credential"
                )
            send_headers["Authorization"] = f"Bearer {credential.secret.get_secret_value()}"
        content = body.model_dump_json().encode() if body is not None else None
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        used = credential.credential_id if authenticated and credential is not None else None
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                params=dict(params) if params else None,
                headers=send_headers,
                timeout=httpx.Timeout(timeout_s) if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise HubError(HubErrorKind.UNREACHABLE, f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise HubError(HubErrorKind.UNREACHABLE, f"{type(exc).__name__}: {exc}") from None
        if response.is_success or (not_modified and response.status_code == 304):
            return response
        if response.status_code < 400:
            # the hub never redirects (and the client does not follow): a 3xx is an ingress or a
            # proxy in the way, and what was sent did not reach the hub
            where = response.headers.get("Location")
            raise HubError(
                HubErrorKind.SERVER,
                f"unexpected {response.status_code} answer"
                + (f" redirecting to {where[:200]!r} (is the hub URL right?)" if where else ""),
                status=response.status_code,
                credential_id=used,
            )
        reason, detail = _problem(response)
        if response.status_code == 401:
            kind = HubErrorKind.UNAUTHORIZED
        elif response.status_code < 500:
            kind = HubErrorKind.CLIENT
        else:
            kind = HubErrorKind.SERVER
        raise HubError(
            kind,
            detail or response.reason_phrase,
            status=response.status_code,
            reason=reason,
            credential_id=used,
        )

    @staticmethod
    def _parse(model: type[Any], response: httpx.Response) -> Any:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise HubError(
                HubErrorKind.SERVER,
                f"unexpected answer to {response.request.url.path}: {exc.error_count()} validation errors",
                status=response.status_code,
            ) from None

    # ------------------------------------------------------------------ routes

    async def register(self, request: RegisterRequest) -> RegisterResponse:
        response = await self._request("POST", f"{API}/register", body=request, authenticated=False)
        result: RegisterResponse = self._parse(RegisterResponse, response)
        return result

    async def rotate(self) -> RegisterResponse:
        response = await self._request("POST", f"{API}/credentials/rotate")
        result: RegisterResponse = self._parse(RegisterResponse, response)
        return result

    async def heartbeat(self, heartbeat: ClusterHeartbeat) -> HeartbeatAck:
        response = await self._request("POST", f"{API}/heartbeat", body=heartbeat)
        result: HeartbeatAck = self._parse(HeartbeatAck, response)
        return result

    async def policies(self, etag: str | None, wait_s: float) -> tuple[PlacedPolicySet, str] | None:
        """The placed set and the ETag to send next time, or None when unchanged (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        params = {"wait": f"{wait_s:g}"} if wait_s > 0 else None
        response = await self._request(
            "GET",
            f"{API}/policies",
            params=params,
            headers=headers,
            timeout_s=wait_s + self.timeout_s,
            not_modified=bool(etag),
        )
        if response.status_code == 304:
            return None
        placed: PlacedPolicySet = self._parse(PlacedPolicySet, response)
        # the header as the hub wrote it (quoted or not) is what If-None-Match must echo
        return placed, response.headers.get("ETag") or placed.etag

    async def report_status(self, report: StatusReport) -> None:
        await self._request("POST", f"{API}/status", body=report)

    async def forward(self, batch: ForwardBatch) -> ForwardAck:
        response = await self._request("POST", f"{API}/forward", body=batch)
        result: ForwardAck = self._parse(ForwardAck, response)
        return result

    async def upload_baselines(self, upload: BaselineUpload) -> None:
        await self._request("POST", f"{API}/baselines", body=upload)

    async def fetch_baselines(self, after: str | None, limit: int) -> BaselinePage:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        response = await self._request("GET", f"{API}/baselines", params=params)
        page: _BaselinePageBody = self._parse(_BaselinePageBody, response)
        # the cursor is opaque: whatever JSON the hub chose (a number, a string) goes back as text
        cursor = None if page.next is None else str(page.next)
        return BaselinePage(items=list(page.items), next=cursor, more=page.more)

    async def commands(self, wait_s: float) -> list[SpokeCommand]:
        params = {"wait": f"{wait_s:g}"} if wait_s > 0 else None
        response = await self._request(
            "GET", f"{API}/commands", params=params, timeout_s=wait_s + self.timeout_s
        )
        page: _CommandPageBody = self._parse(_CommandPageBody, response)
        return list(page.items)

    async def command_result(self, command_id: str, result: CommandResult) -> None:
        await self._request("POST", f"{API}/commands/{quote(command_id, safe='')}/result", body=result)


class _BaselinePageBody(BaseModel):
    items: list[SharedBaseline]
    next: str | int | None = None
    more: bool | None = None


class _CommandPageBody(BaseModel):
    items: list[SpokeCommand]
