"""Issue #2 acceptance: ``qcdr run --once --json`` against the API double under hostile paging.

12,345 findings, page size 200, a 10,000-per-window cap, findings inserted while paging, injected
429/500 answers and token expiry/revocation: every finding is fetched, and every one is accounted
for as a family's finding, an unmapped finding (with its reason) or a malformed one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from qcdr_ingest.qualys.demo_data import generate_findings
from qcdr_ingest.qualys.double import DoubleConfig, Fault, InsertBatch, QualysDouble, serve_double

TOTAL = 12_345

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def findings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    now = datetime.now(UTC).replace(microsecond=0)
    path = tmp_path_factory.mktemp("findings") / "findings.json"
    path.write_bytes(orjson.dumps(generate_findings(TOTAL, seed=2026, now=now)))
    return path


def _hostile(findings: Path, *, ignore_paging: bool) -> DoubleConfig:
    return DoubleConfig(
        findings=findings,
        max_page_size=200,
        window_cap=10_000,
        ignore_paging=ignore_paging,
        token_lifetime_s=3.0,
        # A server that ignores paging only ever serves "page 1" of a window, so insert after it.
        insert_during_paging=[
            InsertBatch(after_page=1 if ignore_paging else 2, count=40),
            InsertBatch(after_page=1 if ignore_paging else 5, count=25),
        ],
        faults=[
            Fault(kind="429", every=17, retry_after="0"),
            Fault(kind="500", every=23),
            Fault(kind="revoke", at=(31,)),
        ],
    )


def _run_cli(base_url: str, config: DoubleConfig, out: Path, *extra: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "QUALYS_USERNAME": config.username,
        "QUALYS_PASSWORD": config.password,
        # Fast but real backoff, so injected faults cost milliseconds.
        "QCDR_QUALYS_BACKOFF_BASE_S": "0.01",
        "QCDR_QUALYS_BACKOFF_MAX_S": "0.05",
    }
    cmd = [
        sys.executable,
        "-m",
        "qcdr",
        "run",
        "--once",
        "--gateway",
        base_url,
        "--hours",
        "25",
        "--output",
        str(out),
        "--json",
        *extra,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    report: dict[str, Any] = orjson.loads(proc.stdout)
    return report


def _check_accounting(report: dict[str, Any], out: Path) -> None:
    assert report["fetched"] == TOTAL
    assert report["reported_total"] == TOTAL
    totals = report["totals"]
    assert totals["accounted"] == TOTAL
    assert totals["mapped"] + totals["unmapped"] + totals["malformed"] == TOTAL
    assert totals["malformed"] > 0
    for group in report["unmapped"].values():
        assert group["reason"]
    for family, data in report["families"].items():
        # Each policy's finding-count annotation matches the family's findings (the -override
        # documents repeat their namespace's findings, so they are not counted twice).
        counted = 0
        for policy in data["policies"]:
            doc = _load(out / policy["file"], policy["kind"], policy["name"], policy["namespace"])
            annotated = int(doc["metadata"]["annotations"]["qcdr.io/finding-count"])
            assert annotated == policy["finding_count"]
            if not policy["name"].endswith("-override"):
                counted += annotated
        assert counted == data["findings"], family


def _load(path: Path, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text()):
        meta = doc["metadata"]
        if doc["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return dict(doc)
    raise AssertionError(f"{kind} {namespace}/{name} not in {path}")


@pytest.fixture
def hostile_double(findings_file: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, QualysDouble]]:
    double = QualysDouble(_hostile(findings_file, ignore_paging=request.param))
    with serve_double(double) as url:
        yield url, double


@pytest.mark.parametrize("hostile_double", [False, True], ids=["paging", "ignores-paging"], indirect=True)
def test_every_finding_is_fetched_and_accounted_for(
    hostile_double: tuple[str, QualysDouble], tmp_path: Path
) -> None:
    url, double = hostile_double
    out = tmp_path / "policies"
    report = _run_cli(url, double.config, out)
    _check_accounting(report, out)
    stats = double.stats.as_dict()
    assert stats["faults"].get("429", 0) > 0
    assert stats["faults"].get("500", 0) > 0
    assert stats["rejected_tokens"] > 0
    assert stats["inserted"] == 65
    assert report["source"]["retries"] > 0
