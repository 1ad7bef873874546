"""``GET /csapi/v1.3/images``, every page: the gateway JWT from the existing Qualys auth client,
bounded retries with backoff (:mod:`qcdr_ingest.qualys.retry`), one fresh login on a 401.

Paging stops at the last page: a short page, an empty page, or ``pageNumber * pageSize >= count``;
``max_pages`` bounds a server that never stops.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from qcdr_ingest.qualys.auth import TokenProvider, TokenTiming
from qcdr_ingest.qualys.authed import authed_get
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.errors import QualysHTTPError, QualysPayloadError

IMAGES_PATH = "/csapi/v1.3/images"


@dataclass(slots=True)
class ImagesFetch:
    items: list[Any] = field(default_factory=list)
    pages: int = 0
    reported_total: int | None = None
    retries: int = 0


class CsImagesClient:
    def __init__(
        self,
        settings: QualysSettings,
        *,
        base_url: str | None = None,
        page_size: int = 250,
        max_pages: int = 10_000,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url or settings.base_url,
            verify=settings.verify_tls,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            headers={"Accept": "application/json", "User-Agent": "qcdr-ingest/0.1"},
            follow_redirects=False,
        )
        self._retry = settings.retry_policy
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.page_size = page_size
        self.max_pages = max_pages
        self._retries = 0
        self._auth = TokenProvider(
            self._http,
            username=settings.username,
            password=settings.password,
            access_token=settings.access_token,
            timing=TokenTiming(
                margin_s=settings.token_refresh_margin_s,
                fraction=settings.token_refresh_fraction,
                default_lifetime_s=settings.token_default_lifetime_s,
            ),
            retry=self._retry,
            rng=self._rng,
            sleep=sleep,
            on_retry=self._count,
        )

    def _count(self, _: object) -> None:
        self._retries += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch_all(self) -> ImagesFetch:
        result = ImagesFetch()
        self._retries = 0
        for number in range(1, self.max_pages + 1):
            data = await self._page(number)
            items = data.get("data")
            if not isinstance(items, list):
                raise QualysPayloadError(f"CS images page {number} has no 'data' array")
            count = data.get("count")
            if isinstance(count, int) and not isinstance(count, bool):
                result.reported_total = count
            result.items.extend(items)
            result.pages += 1
            total = result.reported_total
            if len(items) < self.page_size or (total is not None and number * self.page_size >= total):
                break
        else:
            raise QualysPayloadError(f"CS images did not end within {self.max_pages} pages")
        result.retries = self._retries
        return result

    async def _page(self, number: int) -> dict[str, Any]:
        params = {"pageNumber": str(number), "pageSize": str(self.page_size)}
        response = await authed_get(
            self._http,
            self._auth,
            IMAGES_PATH,
            params,
            policy=self._retry,
            rng=self._rng,
            sleep=self._sleep,
            on_retry=self._count,
        )
        if response.status_code != 200:
            raise QualysHTTPError(
                f"GET {IMAGES_PATH} failed with HTTP {response.status_code}", response.status_code
            )
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise QualysPayloadError(f"CS images page {number} is not JSON") from None
        if not isinstance(data, dict):
            raise QualysPayloadError(f"CS images page {number} is not an object")
        return data
