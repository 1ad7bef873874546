"""DGA scores in ingest's verdict API, asked of the real analysis app served on 127.0.0.1.

The scorer talks HTTP to analysis's ``POST /v1/dns/classify``: answers are cached, a wrong token,
a dead or slow analysis all end in a feed-only verdict that says why, never in an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from qcdr_analysis.app import create_app as create_analysis_app
from qcdr_analysis.dns.router import warm_classifier
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.testing.asgi_server import serve_app
from qcdr_ingest.dns.dga_client import AnalysisDgaScorer
from qcdr_ingest.dns.service import DgaUnavailableError
from qcdr_ingest.settings import IngestSettings

from tests.analysis.conftest import analysis_settings
from tests.ingest.service import conftest as service_fixtures
from tests.ingest.service.conftest import MakeClient

ingest_database_url = service_fixtures.ingest_database_url
db = service_fixtures.db
make_ingest_settings = service_fixtures.make_ingest_settings
make_client = service_fixtures.make_client

ANALYSIS_READ = "analysis-read-for-ingest-0123456789"
RANDOM_NAME = "clwafrfuuxq.yi.org"


def _analysis_app() -> Any:
    return create_analysis_app(
        analysis_settings(database_url="postgresql+asyncpg://unused@127.0.0.1:1/none"),
        auth=ApiAuthSettings(token_read=SecretStr(ANALYSIS_READ)),
    )


@pytest.fixture(scope="module")
def analysis_url() -> Iterator[str]:
    # The served apps run without their lifespan, which would load the model: load it here once
    # (it is cached per process) so the 2-second timeouts below measure serving, not loading.
    warm_classifier()
    with serve_app(_analysis_app(), name="analysis-dns") as url:
        yield url


class CountingApp:
    """An ASGI app in front of another that counts requests and can be made slow."""

    def __init__(self, inner: Any, delay_s: float = 0.0) -> None:
        self.inner, self.delay_s, self.requests = inner, delay_s, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
            await asyncio.sleep(self.delay_s)
        await self.inner(scope, receive, send)


async def test_scorer_asks_analysis_and_caches(analysis_url: str) -> None:
    counting = CountingApp(_analysis_app())
    with serve_app(counting, name="analysis-counting") as url:
        now = [0.0]
        scorer = AnalysisDgaScorer(url, SecretStr(ANALYSIS_READ), cache_s=60, clock=lambda: now[0])
        try:
            random_host = await scorer(RANDOM_NAME)
            assert random_host.is_dga
            assert random_host.score > 0.9
            assert random_host.reasons
            site = await scorer("mail.google.com")
            assert (site.is_dga, site.reasons) == (False, ())
            assert await scorer(RANDOM_NAME) == random_host
            assert counting.requests == 2  # the repeat came from the cache
            now[0] = 61.0
            await scorer(RANDOM_NAME)
            assert counting.requests == 3  # expired: asked again
        finally:
            await scorer.aclose()


async def test_scorer_failures_are_reasons_not_errors(analysis_url: str) -> None:
    wrong = AnalysisDgaScorer(analysis_url, SecretStr("not-the-token"))
    with pytest.raises(DgaUnavailableError, match="analysis answered 401"):
        await wrong(RANDOM_NAME)
    await wrong.aclose()
    slow = CountingApp(_analysis_app(), delay_s=1.0)
    with serve_app(slow, name="analysis-slow") as url:
        scorer = AnalysisDgaScorer(url, SecretStr(ANALYSIS_READ), timeout_s=0.2)
        with pytest.raises(DgaUnavailableError, match="did not answer in time"):
            await scorer(RANDOM_NAME)
        await scorer.aclose()
    # the slow server is gone: nothing listens on its port any more
    dead = AnalysisDgaScorer(url, SecretStr(ANALYSIS_READ), timeout_s=1.0)
    with pytest.raises(DgaUnavailableError, match="unreachable"):
        await dead(RANDOM_NAME)
    await dead.aclose()


async def test_after_a_failure_analysis_is_left_alone_for_a_while() -> None:
    counting = CountingApp(_analysis_app())
    with serve_app(counting, name="analysis-refusing") as url:
        now = [0.0]
        scorer = AnalysisDgaScorer(url, SecretStr("revoked"), retry_after_s=10, clock=lambda: now[0])
        try:
            with pytest.raises(DgaUnavailableError, match="analysis answered 401"):
                await scorer(RANDOM_NAME)
            # verdicts meanwhile answer at once, feed-only, saying why; nothing is sent
            with pytest.raises(DgaUnavailableError, match=r"answered 401 \(not asked again"):
                await scorer("other.example")
            assert counting.requests == 1
            now[0] = 11.0
            with pytest.raises(DgaUnavailableError, match="analysis answered 401"):
                await scorer("other.example")
            assert counting.requests == 2
        finally:
            await scorer.aclose()


def test_token_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(ANALYSIS_READ + "\n")
    settings = IngestSettings(dga_analysis_url="http://analysis:8000", dga_analysis_token_file=secret)
    token = settings.dga_token()
    assert token is not None
    assert token.get_secret_value() == ANALYSIS_READ
    assert ANALYSIS_READ not in repr(settings)


@pytest.mark.db
@pytest.mark.redis
async def test_verdict_api_blocks_a_generated_name(
    make_client: MakeClient, analysis_url: str, db: asyncpg.Connection
) -> None:
    async with make_client(dga_analysis_url=analysis_url, dga_analysis_token=SecretStr(ANALYSIS_READ)) as (
        client,
        _,
    ):
        hit = await client.post("/v1/dns/verdict", json={"name": RANDOM_NAME.upper() + "."})
        assert hit.status_code == 200, hit.text
        body = hit.json()
        assert (body["name"], body["blocked"], body["threat"]) == (RANDOM_NAME, True, "dga")
        assert body["dga_score"] > 0.9
        assert "looks machine-generated" in body["reason"]
        clean = (await client.get("/v1/dns/verdict", params={"name": "www.example.org"})).json()
        assert (clean["blocked"], clean["threat"]) == (False, None)
        assert clean["reason"].startswith("not listed; DGA score ")
    # analysis down: the verdict still answers, feed-only, and says why
    async with make_client(dga_analysis_url="http://127.0.0.1:9", dga_timeout_s=1.0) as (client, _):
        down = await client.post("/v1/dns/verdict", json={"name": RANDOM_NAME})
        assert down.status_code == 200
        assert (down.json()["blocked"], down.json()["dga_score"]) == (False, None)
        assert "DGA score unavailable: analysis unreachable" in down.json()["reason"]
