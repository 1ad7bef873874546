"""The CS images poller against the Qualys double's CS endpoint: paging to the last page, faults
(429/503 with Retry-After, a revoked token, HTML), parsing, and the store + view admission reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from qcdr_common.db import make_engine
from qcdr_common.testing.plugin import scratch_database
from qcdr_ingest.db import upgrade
from qcdr_ingest.images.client import CsImagesClient, ImagesFetch
from qcdr_ingest.images.parse import MalformedImageError, parse_image
from qcdr_ingest.images.poller import poll_images
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.csapi_double import CsApiConfig, add_csapi
from qcdr_ingest.qualys.double import DoubleConfig, Fault, QualysDouble, serve_double
from qcdr_ingest.qualys.errors import QualysPayloadError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

NOW_MS = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)


def image(n: int, *, scanned: bool = True, sev5: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "imageId": f"{n:012x}",
        "sha": f"{n:064x}",
        "repo": [{"registry": "registry.example.com", "repository": f"team/app{n}", "tag": "1.0"}],
        "repoDigests": [
            {
                "registry": "registry.example.com",
                "repository": f"team/app{n}",
                "digest": f"sha256:{n + 1000:064x}",
            }
        ],
        "lastScanned": NOW_MS if scanned else None,
        "vulnerabilities": {"severity3Count": 2, "severity5Count": sev5},
    } | extra


IMAGES = [image(i, scanned=i % 3 != 0, sev5=1 if i == 4 else 0) for i in range(1, 12)]


def test_parse() -> None:
    rec = parse_image(image(4, sev5=1))
    assert rec.image_key == f"sha256:{4:064x}"
    assert rec.names == ("registry.example.com/team/app4:1.0",)
    assert rec.digests == (f"sha256:{4:064x}", f"sha256:{1004:064x}")
    assert rec.scanned
    assert rec.max_severity == 5
    unscanned = parse_image(image(3, scanned=False) | {"vulnerabilities": None})
    assert not unscanned.scanned
    assert unscanned.max_severity is None
    for bad in ({"imageId": "x"}, {"sha": "nothex"}, "text"):
        with pytest.raises(MalformedImageError):
            parse_image(bad)


@pytest.mark.parametrize("last_scanned", [10**18, float("inf"), 12345])
def test_a_scan_time_that_is_not_epoch_milliseconds_is_malformed(last_scanned: float) -> None:
    # 10**18 and inf do not even make a datetime: before, a ValueError or OverflowError that
    # failed the whole poll, every cycle
    with pytest.raises(MalformedImageError, match="lastScanned"):
        parse_image(image(4) | {"lastScanned": last_scanned})


@pytest.mark.parametrize(
    "change",
    [
        {"imageId": "0123\x00"},
        {"repo": [{"registry": "registry.example.com", "repository": "team/app\x00", "tag": "1.0"}]},
        {"repo": [{"registry": "registry\x00.example.com", "repository": "team/app", "tag": "1.0"}]},
        {"repo": [{"registry": "registry.example.com", "repository": "team/app", "tag": "1.0\x00evil"}]},
    ],
    ids=["imageId", "repository", "registry", "tag"],
)
def test_a_nul_character_in_a_stored_text_is_malformed(change: dict[str, Any]) -> None:
    # PostgreSQL refuses NUL in text: before, the poll's whole upsert failed, every cycle
    with pytest.raises(MalformedImageError, match="NUL character"):
        parse_image(image(4) | change)


def test_lists_of_another_type_are_ignored() -> None:
    record = parse_image(image(4) | {"repo": 5, "repoDigests": "sha256:abc"})
    assert (record.names, record.digests) == ((), (f"sha256:{4:064x}",))


class _OneOddRecord:
    async def fetch_all(self) -> Any:
        return ImagesFetch(items=[image(1), image(2) | {"lastScanned": 10**18}], pages=1)


class _Session:
    async def execute(self, *_: Any, **__: Any) -> None:
        return None

    async def flush(self) -> None:
        return None


async def test_one_odd_record_costs_itself_not_the_poll() -> None:
    result = await poll_images(_OneOddRecord(), _Session())  # type: ignore[arg-type]
    assert (result.stored, result.malformed) == (1, 1)


async def fetch(
    make_settings: Callable[..., QualysSettings], cs: CsApiConfig, page_size: int = 4
) -> tuple[Any, Any]:
    double = QualysDouble(DoubleConfig())
    stats = add_csapi(double, cs)
    with serve_double(double) as url:
        client = CsImagesClient(make_settings(), base_url=url, page_size=page_size)
        try:
            return await client.fetch_all(), stats
        finally:
            await client.aclose()


async def test_pages_until_the_last(make_settings: Callable[..., QualysSettings]) -> None:
    result, stats = await fetch(make_settings, CsApiConfig(images=IMAGES))
    assert [i["imageId"] for i in result.items] == [i["imageId"] for i in IMAGES]
    assert result.pages == stats.pages_served == 3
    assert result.reported_total == 11
    # an exact multiple of the page size stops on the count, without an empty extra page
    result, stats = await fetch(make_settings, CsApiConfig(images=IMAGES[:8]))
    assert result.pages == stats.pages_served == 2
    # the server clamps the page size: short pages are not mistaken for the last one when count says more
    result, _ = await fetch(make_settings, CsApiConfig(images=IMAGES, max_page_size=4), page_size=4)
    assert len(result.items) == 11


async def test_faults_are_retried(make_settings: Callable[..., QualysSettings]) -> None:
    faults = [
        Fault(kind="429", at=(1,), retry_after="0"),
        Fault(kind="503", at=(3,), retry_after="0"),
        Fault(kind="revoke", at=(4,)),
    ]
    result, stats = await fetch(make_settings, CsApiConfig(images=IMAGES, faults=faults))
    assert len(result.items) == 11
    assert result.retries >= 2
    assert stats.rejected_tokens == 1  # the revoked token got one fresh login


async def test_html_is_a_payload_error(make_settings: Callable[..., QualysSettings]) -> None:
    with pytest.raises(QualysPayloadError):
        await fetch(make_settings, CsApiConfig(images=IMAGES, faults=[Fault(kind="html", at=(2,))]))


@pytest.fixture(scope="module")
def ingest_db(base_database_url: str) -> Iterator[str]:
    with scratch_database(base_database_url, "qcdr_ingest_images") as url:
        upgrade(url)
        yield url


@pytest.mark.db
async def test_poll_stores_and_the_view_answers(
    make_settings: Callable[..., QualysSettings], ingest_db: str
) -> None:
    double = QualysDouble(DoubleConfig())
    nul = image(12) | {"repo": [{"registry": "r.example.com", "repository": "team/x", "tag": "1\x00"}]}
    add_csapi(double, CsApiConfig(images=[*IMAGES, {"imageId": "broken"}, IMAGES[0], nul]))
    engine = make_engine(ingest_db)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        with serve_double(double) as url:
            client = CsImagesClient(make_settings(), base_url=url, page_size=5)
            try:
                async with sessions.begin() as session:
                    result = await poll_images(client, session)
                async with sessions.begin() as session:
                    await poll_images(client, session)  # idempotent
            finally:
                await client.aclose()
    finally:
        await engine.dispose()
    assert (result.fetched, result.stored, result.malformed) == (14, 11, 2)
    conn = await asyncpg.connect(ingest_db.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT * FROM ingest_image_status ORDER BY image_key")
    finally:
        await conn.close()
    assert len(rows) == 11
    by_name = {r["names"][0]: r for r in rows}
    assert by_name["registry.example.com/team/app4:1.0"]["max_severity"] == 5
    assert by_name["registry.example.com/team/app3:1.0"]["scanned"] is False

    # admission's cache reads the view and answers by name and by digest
    from qcdr_admission.policies.image_status import ImageStatusCache

    cache = ImageStatusCache()
    engine = make_engine(ingest_db)
    try:
        await cache.load(engine)
    finally:
        await engine.dispose()
    assert cache.lookup("registry.example.com/team/app4:1.0").scanned  # type: ignore[union-attr]
    assert not cache.lookup("registry.example.com/team/app3:1.0").scanned  # type: ignore[union-attr]
    assert cache.lookup(f"elsewhere.io/x@sha256:{1004:064x}") is not None
    assert cache.lookup("registry.example.com/team/app4:2.0") is None
    assert cache.lookup("registry.example.com.evil.io/team/app4:1.0") is None


@pytest.mark.db
async def test_the_worker_polls_in_one_replica_at_a_time(
    make_settings: Callable[..., QualysSettings], ingest_db: str
) -> None:
    from qcdr_ingest.images.worker import ImagesWorker

    double = QualysDouble(DoubleConfig())
    add_csapi(double, CsApiConfig(images=IMAGES))
    engine = make_engine(ingest_db)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions.begin() as session:
            await session.execute(text("TRUNCATE ingest_images"))  # the module's earlier polls
        with serve_double(double) as url:
            worker = ImagesWorker(sessions, make_settings(), interval=timedelta(minutes=15), base_url=url)
            result = await worker.poll_once()
            assert result is not None
            assert result.stored == len(IMAGES)
            # another replica's timer, within the interval: it does not ask the API again
            asked = double.stats.requests
            replica = ImagesWorker(sessions, make_settings(), interval=timedelta(minutes=15), base_url=url)
            assert await replica.poll_once() is None
            assert double.stats.requests == asked
            # once the last poll is an interval old, the next timer polls
            async with sessions.begin() as session:
                await session.execute(
                    text("UPDATE ingest_images SET last_seen = last_seen - interval '15 minutes'")
                )
            assert await replica.poll_once() is not None
            # while another replica holds the lock, a cycle does nothing
            async with sessions.begin() as other:
                await other.execute(text("SELECT pg_advisory_xact_lock(hashtext('qcdr-ingest-images'))"))
                assert await asyncio.wait_for(worker.poll_once(), 10) is None
    finally:
        await engine.dispose()
