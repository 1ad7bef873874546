"""Acceptance: 12,345 findings come through a hostile API exactly once each.

The double serves 12,345 findings (about 2 % of them malformed) with page size 200 and a
per-window cap of 10,000, inserts findings into the window being paged, answers 429 and 500
now and then, revokes the token mid-run and hands out tokens that live 1.5 s. The client must
return every finding exactly once and agree with the server's count; the same must hold when the
server ignores paging altogether.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qcdr_ingest.qualys.client import QualysCdrClient
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.demo_data import generate_findings
from qcdr_ingest.qualys.double import DoubleConfig, Fault, InsertBatch, QualysDouble, serve_double
from qcdr_ingest.qualys.normalize import normalize_all

TOTAL = 12_345
NOW = datetime(2026, 3, 1, tzinfo=UTC)
FAULTS = [
    Fault(kind="429", every=17, retry_after="1"),
    Fault(kind="500", every=23),
    Fault(kind="revoke", at=(30,)),
]


@pytest.fixture(scope="module")
def dataset() -> list[Any]:
    return generate_findings(TOTAL, 20260301, NOW)


@pytest.mark.parametrize(
    ("ignore_paging", "inserts"),
    [
        (False, [InsertBatch(after_page=3, count=20), InsertBatch(after_page=7, count=15)]),
        # Without paging the client only ever asks for the first page of a window.
        (True, [InsertBatch(after_page=1, count=20), InsertBatch(after_page=1, count=15)]),
    ],
    ids=["paging", "ignored-paging"],
)
async def test_every_finding_exactly_once(
    dataset: list[Any],
    make_settings: Callable[..., QualysSettings],
    ignore_paging: bool,
    inserts: list[InsertBatch],
) -> None:
    config = DoubleConfig(
        findings=dataset,
        max_page_size=200,
        window_cap=10_000,
        ignore_paging=ignore_paging,
        insert_during_paging=inserts,
        faults=FAULTS,
        token_lifetime_s=1.5,
    )
    double = QualysDouble(config)
    assert double.total == TOTAL
    with serve_double(double) as url:
        settings = make_settings(gateway_url=url, page_size=200, window_cap=10_000)
        async with QualysCdrClient(settings) as client:
            result = await client.fetch_findings(NOW - timedelta(hours=24), NOW)

    assert double.stats.inserted == 35
    assert result.fetched == TOTAL
    assert result.reported_total == TOTAL
    assert len(result.findings) + len(result.unidentified) == TOTAL
    assert len({f["uuid"] for f in result.findings}) == len(result.findings)
    assert result.truncated_windows == []
    assert result.complete
    # The faults really happened and were absorbed.
    assert double.stats.status[429] > 0
    assert double.stats.status[500] > 0
    assert double.stats.rejected_tokens >= 1
    assert double.stats.tokens_issued >= 2
    assert result.retries >= double.stats.status[429] + double.stats.status[500]
    if ignore_paging:
        assert result.window_splits > 50
        assert any("ignores paging" in w for w in result.warnings)
    else:
        assert result.window_splits >= 1  # 12,345 > the 10,000 cap

    normalized = normalize_all([*result.findings, *result.unidentified])
    assert len(normalized.events) + len(normalized.malformed) == TOTAL
    assert len(normalized.malformed) == round(TOTAL * 0.02)
