"""One authenticated GET against the Qualys gateway, shared by every Qualys client (CDR findings,
Container Security images): the bearer token from the provider, retries by the policy, and one
fresh login when the gateway answers 401 (a second 401 means the account is refused)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping

import httpx

from qcdr_ingest.qualys.auth import TokenProvider
from qcdr_ingest.qualys.errors import QualysAuthError, transport_error
from qcdr_ingest.qualys.retry import RetryNotice, RetryPolicy, send_with_retries


async def authed_get(
    http: httpx.AsyncClient,
    auth: TokenProvider,
    path: str,
    params: Mapping[str, str],
    *,
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[RetryNotice], None] | None = None,
    on_send: Callable[[], None] | None = None,
) -> httpx.Response:
    """The response of ``GET path`` (any status but 401 and 403, which raise QualysAuthError)."""
    url = http.base_url.join(path.lstrip("/"))
    used: list[str] = []

    async def send() -> httpx.Response:
        token = await auth.get()
        used.append(token)
        if on_send is not None:
            on_send()
        return await http.get(url, params=dict(params), headers={"Authorization": f"Bearer {token}"})

    for attempt in (1, 2):
        try:
            response = await send_with_retries(send, policy, rng=rng, sleep=sleep, on_retry=on_retry)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc
        if response.status_code != 401:
            break
        if attempt == 2:
            raise QualysAuthError(f"Qualys rejected a freshly issued token for {path} (HTTP 401)")
        # One fresh login; a second 401 means the account itself is not allowed in.
        await auth.renew(used[-1])
    if response.status_code == 403:
        raise QualysAuthError(
            f"Qualys refused {path} (HTTP 403): the account may lack Container Security / CDR API access"
        )
    return response
