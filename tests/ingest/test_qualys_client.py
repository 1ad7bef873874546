from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import jwt
import pytest
from qcdr_ingest.qualys.client import QualysCdrClient, format_end_at, format_start_at, severity_param
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.double import DoubleConfig, Fault, InsertBatch, QualysDouble, serve_double
from qcdr_ingest.qualys.double_store import format_millis
from qcdr_ingest.qualys.errors import QualysAuthError, QualysHTTPError, QualysPayloadError
from qcdr_ingest.qualys.normalize import normalize_all
from qcdr_ingest.qualys.results import FetchProgress, FetchResult

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY_AGO = NOW - timedelta(days=1)
Settings = Callable[..., QualysSettings]
TOKEN = jwt.encode({"sub": "demo", "exp": 4_102_444_800}, "k" * 64, algorithm="HS256")


def findings(count: int, *, span_s: int = 86_000, prefix: str = "f") -> list[dict[str, Any]]:
    """``count`` well-formed findings spread evenly over the ``span_s`` seconds before NOW."""
    end_ms = int(NOW.timestamp() * 1000) - 1000
    step = span_s * 1000 // max(count, 1)
    return [
        {
            "uuid": f"{prefix}{i:06d}",
            "threatCategory": "Network_Scanning_Utility",
            "severity": 1 + i % 4,
            "timestamp": format_millis(end_ms - i * step),
            "resourceType": "container" if i % 5 else "host",
        }
        for i in range(count)
    ]


async def fetch(settings: QualysSettings, url: str, **kwargs: Any) -> FetchResult:
    async with QualysCdrClient(settings, base_url=url) as client:
        return await client.fetch_findings(DAY_AGO, NOW, **kwargs)


def assert_complete(result: FetchResult, expected: int) -> None:
    assert result.fetched == expected
    assert len(result.findings) + len(result.unidentified) == expected
    assert len({f["uuid"] for f in result.findings}) == len(result.findings)
    assert result.truncated_windows == []
    assert result.complete


def test_query_time_formats() -> None:
    moment = datetime(2026, 2, 28, 23, 59, 58, 654321, tzinfo=UTC)
    assert format_start_at(moment) == "2026-02-28T23:59:58.000Z"
    assert format_end_at(moment) == "2026-02-28T23:59:58.999Z"


@pytest.mark.parametrize(
    ("given", "sent"),
    [("LOW", "1"), ("medium", "2"), ("High", "3"), ("CRITICAL", "4"), ("5", "5"), (" 3 ", "3")],
)
def test_severity_parameter(given: str, sent: str) -> None:
    assert severity_param(given) == sent


def test_unknown_severity_is_rejected_not_passed_through() -> None:
    with pytest.raises(ValueError, match="unknown severity 'urgent'"):
        severity_param("urgent")


async def test_request_parameters(make_settings: Settings) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth"):
            return httpx.Response(201, text=TOKEN)
        seen.append(request)
        return httpx.Response(200, json={"content": [], "totalElements": 0, "totalPages": 0, "last": True})

    settings = make_settings(
        page_size=50, page_param="page", size_param="size", page_base=1, verify_total=False
    )
    transport = httpx.MockTransport(handler)
    async with QualysCdrClient(settings, base_url="https://gw.example/proxy", transport=transport) as client:
        start = datetime(2026, 2, 28, 8, 30, 15, 500_000, tzinfo=UTC)
        end = datetime(2026, 2, 28, 11, 0, 0, tzinfo=timezone(timedelta(hours=2)))
        await client.fetch_findings(start, end, severity="high", resource_type="container")
    [request] = seen
    assert request.url.path == "/proxy/cdr-api/rest/v1/findings"
    assert dict(request.url.params) == {
        "startAt": "2026-02-28T08:30:15.000Z",
        "endAt": "2026-02-28T09:00:00.999Z",
        "limit": "50",
        "page": "1",
        "size": "50",
        "severity": "3",
        "resourceType": "container",
    }
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_naive_or_reversed_ranges_are_rejected(make_settings: Settings) -> None:
    async with QualysCdrClient(make_settings(), base_url="http://x") as client:
        with pytest.raises(ValueError, match="timezone-aware"):
            await client.fetch_findings(datetime(2026, 1, 1), NOW)
        with pytest.raises(ValueError, match="start must not be after end"):
            await client.fetch_findings(NOW, DAY_AGO)


@pytest.mark.parametrize("page_base", [0, 1])
async def test_pages_until_the_last_page(make_settings: Settings, page_base: int) -> None:
    double = QualysDouble(DoubleConfig(findings=findings(1000), page_base=page_base))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=100, page_base=page_base), url)
    assert_complete(result, 1000)
    assert result.reported_total == 1000
    assert result.pages == 10
    assert result.window_splits == 0
    assert result.duplicates_dropped == 0
    assert result.warnings == []
    assert double.stats.findings_requests == 11  # ten pages and the final total check


async def test_findings_come_back_in_a_stable_order(make_settings: Settings) -> None:
    data = findings(500)
    with serve_double(DoubleConfig(findings=data)) as url:
        small = await fetch(make_settings(page_size=30), url)
        large = await fetch(make_settings(page_size=200), url)
    assert small.findings == large.findings
    assert [f["uuid"] for f in small.findings] == sorted(f["uuid"] for f in data)[::-1]  # oldest first


async def test_filters_are_applied_by_the_server(make_settings: Settings) -> None:
    data = findings(400)
    with serve_double(DoubleConfig(findings=data)) as url:
        result = await fetch(make_settings(page_size=50), url, severity="HIGH", resource_type="container")
    expected = [f for f in data if f["severity"] == 3 and f["resourceType"] == "container"]
    assert_complete(result, len(expected))


async def test_pages_without_any_metadata(make_settings: Settings) -> None:
    with serve_double(DoubleConfig(findings=findings(450), omit_page_metadata=True)) as url:
        result = await fetch(make_settings(page_size=100), url)
    assert_complete(result, 450)
    assert result.reported_total is None  # nothing was reported, and we do not pretend otherwise
    assert result.pages == 5


async def test_full_last_page_without_metadata_asks_once_more(make_settings: Settings) -> None:
    with serve_double(DoubleConfig(findings=findings(300), omit_page_metadata=True)) as url:
        result = await fetch(make_settings(page_size=100), url)
    assert_complete(result, 300)
    assert result.pages == 4  # the fourth, empty page proves there is no more


async def test_server_ignoring_paging_falls_back_to_window_splitting(make_settings: Settings) -> None:
    double = QualysDouble(DoubleConfig(findings=findings(1000), ignore_paging=True))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=100), url)
    assert_complete(result, 1000)
    assert result.reported_total == 1000
    assert result.window_splits >= 10
    assert any("ignores paging" in w for w in result.warnings)


async def test_server_ignoring_paging_without_metadata(make_settings: Settings) -> None:
    config = DoubleConfig(findings=findings(700), ignore_paging=True, omit_page_metadata=True)
    with serve_double(config) as url:
        result = await fetch(make_settings(page_size=100), url)
    assert_complete(result, 700)
    assert result.window_splits > 0


async def test_client_base_mismatch_still_gets_everything(make_settings: Settings) -> None:
    # A 1-based server treats page 0 as page 1; the repeat looks like ignored paging -> splitting.
    with serve_double(DoubleConfig(findings=findings(500), page_base=1)) as url:
        result = await fetch(make_settings(page_size=100, page_base=0), url)
    assert_complete(result, 500)


async def test_one_based_client_on_a_zero_based_server_corrects_itself(make_settings: Settings) -> None:
    double = QualysDouble(DoubleConfig(findings=findings(250), page_base=0))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=100, page_base=1), url)
    assert_complete(result, 250)
    assert any("QCDR_QUALYS_PAGE_BASE" in w for w in result.warnings)
    assert double.stats.findings_requests <= 6


async def test_per_window_cap_detected_from_an_empty_page(make_settings: Settings) -> None:
    # The client expects a bigger cap than the server has: the empty page past the cap gives it away.
    double = QualysDouble(DoubleConfig(findings=findings(1000), window_cap=300, max_page_size=100))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=100, window_cap=100_000), url)
    assert_complete(result, 1000)
    assert result.reported_total == 1000
    assert result.window_splits >= 2


async def test_per_window_cap_known_in_advance_splits_on_the_first_page(make_settings: Settings) -> None:
    double = QualysDouble(DoubleConfig(findings=findings(1000), window_cap=300, max_page_size=100))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=100, window_cap=300), url)
    assert_complete(result, 1000)
    assert not any("empty page" in w for w in result.warnings)


async def test_findings_inserted_while_paging_are_not_lost(make_settings: Settings) -> None:
    batches = [InsertBatch(after_page=2, count=7), InsertBatch(after_page=4, count=5)]
    double = QualysDouble(DoubleConfig(findings=findings(600), insert_during_paging=batches))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=50), url)
    assert double.stats.inserted == 12
    assert_complete(result, 600)
    assert result.reported_total == 600
    assert result.duplicates_dropped > 0  # offsets shifted under the client


async def test_findings_inserted_after_a_window_was_read_are_caught_by_the_final_check(
    make_settings: Settings,
) -> None:
    double = QualysDouble(DoubleConfig(findings=findings(300)))
    late = findings(5, prefix="late", span_s=3_600)
    inserted: list[bool] = []

    def progress(p: FetchProgress) -> None:
        # The client is between requests here, so touching the double's store is race-free.
        if p.fetched == 300 and not inserted:
            inserted.append(True)
            double.store.insert(
                late, newest_ms=int(NOW.timestamp() * 1000) - 10, oldest_ms=int(DAY_AGO.timestamp() * 1000)
            )

    with serve_double(double) as url:
        async with QualysCdrClient(make_settings(page_size=100), base_url=url) as client:
            result = await client.fetch_findings(DAY_AGO, NOW, progress=progress)
    assert inserted
    assert_complete(result, 305)
    assert result.reported_total == 305


async def test_faults_are_retried(make_settings: Settings) -> None:
    faults = [
        Fault(kind="429", at=(2,), retry_after="0"),
        Fault(kind="500", at=(3,)),
        Fault(kind="503", at=(4,)),
        Fault(kind="slow", at=(5,), delay_s=0.6),
    ]
    double = QualysDouble(DoubleConfig(findings=findings(400), faults=faults))
    with serve_double(double) as url:
        result = await fetch(make_settings(page_size=100, timeout_s=0.3), url)
    assert_complete(result, 400)
    assert result.retries == 4
    assert double.stats.status[429] == 1
    assert double.stats.status[500] == 1
    assert double.stats.status[503] == 1
    assert double.stats.faults["slow"] == 1


async def test_expiring_tokens_are_renewed(make_settings: Settings) -> None:
    # ten pages, every second one 0.25 s slow: the fetch outlasts a token (1.25 s at least), and a
    # fresh token outlives the request it was got for also on a busy machine (a second 401 in a
    # row is an error)
    faults = [Fault(kind="slow", every=2, delay_s=0.25)]
    double = QualysDouble(DoubleConfig(findings=findings(500), token_lifetime_s=1.0, faults=faults))
    with serve_double(double) as url:
        # No early renewal, so some requests race the expiry and get a 401 first.
        result = await fetch(make_settings(page_size=50, token_refresh_fraction=0.0), url)
    assert_complete(result, 500)
    assert double.stats.tokens_issued >= 2


async def test_persistent_5xx_is_a_one_line_http_error(make_settings: Settings) -> None:
    config = DoubleConfig(findings=findings(10), faults=[Fault(kind="500", every=1)])
    with serve_double(config) as url, pytest.raises(QualysHTTPError, match="HTTP 500") as info:
        await fetch(make_settings(max_retries=2), url)
    assert info.value.status_code == 500


async def test_html_instead_of_json_is_a_payload_error(make_settings: Settings) -> None:
    config = DoubleConfig(findings=findings(10), faults=[Fault(kind="html", every=1)])
    with serve_double(config) as url, pytest.raises(QualysPayloadError, match="HTML, not JSON"):
        await fetch(make_settings(), url)


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [(403, QualysAuthError, "HTTP 403"), (404, QualysHTTPError, "HTTP 404"), (400, QualysHTTPError, "bad")],
)
async def test_other_statuses(
    make_settings: Settings, status: int, error: type[Exception], text: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth":
            return httpx.Response(201, text=TOKEN)
        return httpx.Response(status, text="bad\nrequest")

    async with QualysCdrClient(
        make_settings(), base_url="http://x", transport=httpx.MockTransport(handler)
    ) as c:
        with pytest.raises(error, match=text) as info:
            await c.fetch_findings(DAY_AGO, NOW)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [b'{"items": []}', b'"just a string"', b'{"content": {"a": 1}}'],
)
async def test_unexpected_json_shapes(make_settings: Settings, body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth":
            return httpx.Response(201, text=TOKEN)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async with QualysCdrClient(
        make_settings(), base_url="http://x", transport=httpx.MockTransport(handler)
    ) as c:
        with pytest.raises(QualysPayloadError, match="no 'content' array"):
            await c.fetch_findings(DAY_AGO, NOW)


async def test_items_without_uuid_are_kept_apart_and_counted_as_malformed(make_settings: Settings) -> None:
    good = findings(20)
    odd: list[Any] = ["not an object", 42, {"threatCategory": "Execution", "timestamp": good[3]["timestamp"]}]
    data: list[Any] = good[:5] + odd + good[5:]
    with serve_double(DoubleConfig(findings=data)) as url:
        result = await fetch(make_settings(page_size=7), url)
    assert result.fetched == 23
    assert result.reported_total == 23
    assert len(result.findings) == 20
    assert sorted(map(str, result.unidentified)) == sorted(map(str, odd))
    normalized = normalize_all([*result.findings, *result.unidentified])
    assert len(normalized.events) == 20
    assert len(normalized.malformed) == 3


async def test_a_window_that_cannot_be_split_is_reported_not_hidden(make_settings: Settings) -> None:
    same_second = [
        {
            "uuid": f"s{i}",
            "threatCategory": "Execution",
            "severity": 2,
            "timestamp": "2026-02-28T12:00:00.500Z",
        }
        for i in range(150)
    ]
    with serve_double(DoubleConfig(findings=same_second, ignore_paging=True)) as url:
        result = await fetch(make_settings(page_size=100), url)
    assert result.fetched == 100
    assert result.reported_total == 150
    assert not result.complete
    [window] = result.truncated_windows
    assert window.start == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert (window.fetched, window.reported) == (100, 150)
    assert any("cannot be split further" in w for w in result.warnings)


async def test_progress_is_reported_after_every_page(make_settings: Settings) -> None:
    seen: list[FetchProgress] = []
    with serve_double(DoubleConfig(findings=findings(250))) as url:
        async with QualysCdrClient(make_settings(page_size=100), base_url=url) as client:
            await client.fetch_findings(DAY_AGO, NOW, progress=seen.append)
    assert [p.fetched for p in seen] == [100, 200, 250]
    assert all(p.expected == 250 for p in seen)
    assert seen[-1].pages == 3
