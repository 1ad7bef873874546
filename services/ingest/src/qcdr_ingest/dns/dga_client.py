"""DGA scores for the verdict API, asked of the analysis service (``POST /v1/dns/classify``).

The classifier lives in analysis (services never import each other); ingest asks it over HTTP with a
read token, with a short timeout, and keeps each name's answer for a while (a model scores a name
the same way every time, and verdict callers ask about the same names again and again). When
analysis cannot answer, the caller gets :class:`DgaUnavailableError` and the verdict says so rather
than failing; for ``retry_after_s`` after such a failure analysis is not asked at all, so verdicts
stay fast (feed-only) while it is down instead of each waiting out the timeout.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import httpx
from pydantic import SecretStr

from qcdr_ingest.dns.service import DgaScore, DgaUnavailableError

CLASSIFY_PATH = "/v1/dns/classify"


class AnalysisDgaScorer:
    """``await scorer(name)`` -> :class:`DgaScore`, cached for ``cache_s`` seconds."""

    def __init__(
        self,
        base_url: str,
        token: SecretStr | None,
        *,
        timeout_s: float = 2.0,
        cache_s: float = 600.0,
        cache_size: int = 10_000,
        retry_after_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._cache: OrderedDict[str, tuple[float, DgaScore]] = OrderedDict()
        self._cache_s = cache_s
        self._cache_size = cache_size
        self._clock = clock
        self._retry_after_s = retry_after_s
        self._down_until = -1.0
        self._down_reason = ""

    async def __call__(self, name: str) -> DgaScore:
        now = self._clock()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(name)
            return hit[1]
        if now < self._down_until:
            raise DgaUnavailableError(f"{self._down_reason} (not asked again for a few seconds)")
        try:
            score = await self._ask(name)
        except DgaUnavailableError as exc:
            self._down_until, self._down_reason = now + self._retry_after_s, str(exc)
            raise
        self._cache[name] = (now + self._cache_s, score)
        self._cache.move_to_end(name)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return score

    async def _ask(self, name: str) -> DgaScore:
        try:
            response = await self._client.post(CLASSIFY_PATH, json={"names": [name]})
        except httpx.TimeoutException:
            raise DgaUnavailableError("analysis did not answer in time") from None
        except httpx.HTTPError as exc:
            raise DgaUnavailableError(f"analysis unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise DgaUnavailableError(f"analysis answered {response.status_code}")
        try:
            result = response.json()["results"][0]
            return DgaScore(
                score=float(result["score"]),
                is_dga=bool(result["is_dga"]),
                reasons=tuple(str(r) for r in result.get("reasons", ())),
            )
        except (ValueError, KeyError, IndexError, TypeError):
            raise DgaUnavailableError("analysis answered something that is no classification") from None

    async def aclose(self) -> None:
        await self._client.aclose()
