"""HTTP clients for the services the console reads (ingest, analysis, response, admission).

Every call answers a :class:`Result` rather than raising: a page shows "analysis unavailable:
<reason>" in a box and renders the rest, so a service that is down or slow never makes a 500.
The reason names the status or the transport error, never the service token.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from qcdr_common.logging import get_logger
from qcdr_common.tls_files import ca_context

from qcdr_federation.settings import FederationSettings

log = get_logger("qcdr.federation.console.backends")

Service = Literal["ingest", "analysis", "response", "admission"]
SERVICES: tuple[Service, ...] = ("ingest", "analysis", "response", "admission")
QueryParams = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class Result:
    service: Service
    data: Any = None
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str:
        return f"{self.service} unavailable: {self.error}"


def _reason(response: httpx.Response) -> str:
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or body.get("title") or "")
    except ValueError:
        pass
    return f"HTTP {response.status_code}" + (f" ({detail[:200]})" if detail else "")


class Backends:
    """One ``httpx.AsyncClient`` per service; ``transports`` replaces the network (tests)."""

    def __init__(
        self,
        settings: FederationSettings,
        *,
        transports: Mapping[Service, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        token = settings.console_token()
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
        urls: dict[Service, str] = {
            "ingest": settings.console_ingest_url,
            "analysis": settings.console_analysis_url,
            "response": settings.console_response_url,
            "admission": settings.console_admission_url,
        }
        transports = transports or {}
        ca_file = settings.console_admission_ca_file
        verify: ssl.SSLContext | bool = ca_context(ca_file) if ca_file is not None else True
        self._clients: dict[Service, httpx.AsyncClient] = {
            name: httpx.AsyncClient(
                base_url=urls[name],
                headers=headers,
                timeout=httpx.Timeout(settings.console_http_timeout_s),
                transport=transports.get(name),
                verify=verify if name == "admission" else True,
            )
            for name in SERVICES
        }

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def get(self, service: Service, path: str, params: QueryParams | None = None) -> Result:
        return await self._call(service, "GET", path, params=params)

    async def post(self, service: Service, path: str, body: Mapping[str, Any] | None = None) -> Result:
        return await self._call(service, "POST", path, json=body)

    async def _call(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Result:
        client = self._clients[service]
        try:
            response = await client.request(method, path, params=params, json=json)
        except httpx.TimeoutException:
            log.warning("console_backend_timeout", service=service, path=path)
            return Result(service, error="timed out")
        except httpx.HTTPError as exc:
            log.warning("console_backend_error", service=service, path=path, error=type(exc).__name__)
            return Result(service, error=f"cannot connect ({type(exc).__name__})")
        if response.status_code >= 400:
            log.info("console_backend_refused", service=service, path=path, status=response.status_code)
            return Result(service, error=_reason(response), status=response.status_code)
        if response.status_code == 204 or not response.content:
            return Result(service, data=None, status=response.status_code)
        try:
            return Result(service, data=response.json(), status=response.status_code)
        except ValueError:
            return Result(service, error="answered something that is not JSON", status=response.status_code)
