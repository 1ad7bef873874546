import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from qcdr_ingest.qualys import double as double_module
from qcdr_ingest.qualys.double import DoubleConfig, Fault, InsertBatch, QualysDouble, serve_double
from qcdr_ingest.qualys.double_store import FindingStore, load_findings

FINDINGS = "/cdr-api/rest/v1/findings"
WINDOW = {"startAt": "2026-02-28T00:00:00.000Z", "endAt": "2026-02-28T23:59:59.999Z"}
ROOT = Path(__file__).resolve().parents[2]


def item(i: int, ts: str, **extra: Any) -> dict[str, Any]:
    return {"uuid": f"u{i}", "threatCategory": "Execution", "severity": 3, "timestamp": ts} | extra


DATA = [
    item(1, "2026-02-28T10:00:00.000Z", resourceType="container"),
    item(2, "2026-02-28T12:00:00.000Z", severity=4, resourceType="host"),
    item(3, "2026-02-28T11:00:00.000Z", resourceType="Container"),
    item(4, "2026-02-27T11:00:00.000Z"),
    item(5, "2026-02-28T11:00:00.000Z", severity="HIGH"),
]


@pytest.fixture
def client() -> Iterator[tuple[httpx.Client, QualysDouble]]:
    double = QualysDouble(DoubleConfig(findings=DATA, max_page_size=2))
    with logged_in(double) as http:
        yield http, double


def test_auth_answers_201_with_a_raw_jwt() -> None:
    with serve_double(DoubleConfig(token_lifetime_s=600)) as url:
        form = {"username": "demo", "password": "demo-password", "token": "true"}
        response = httpx.post(f"{url}/auth", data=form)
    assert response.status_code == 201
    claims = jwt.decode(response.text, options={"verify_signature": False})
    assert claims["sub"] == "demo"
    assert claims["exp"] - claims["iat"] == pytest.approx(600)


@pytest.mark.parametrize(
    ("form", "status"),
    [({"username": "demo", "password": "nope"}, 401), ({"username": "demo"}, 400), ({}, 400)],
)
def test_auth_rejects_bad_logins(form: dict[str, str], status: int) -> None:
    double = QualysDouble(DoubleConfig())
    with serve_double(double) as url:
        assert httpx.post(f"{url}/auth", data=form).status_code == status
    assert double.stats.tokens_issued == 0


def test_findings_need_a_valid_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    # the double's clock is the test's: a token lives its lifetime however slow the machine
    clock = [time.time()]
    monkeypatch.setattr(double_module, "time", SimpleNamespace(time=lambda: clock[0]))
    with serve_double(DoubleConfig(findings=DATA, token_lifetime_s=60)) as url:
        assert httpx.get(f"{url}{FINDINGS}").status_code == 401
        assert (
            httpx.get(f"{url}{FINDINGS}", headers={"Authorization": "Bearer forged.token.x"}).status_code
            == 401
        )
        token = httpx.post(f"{url}/auth", data={"username": "demo", "password": "demo-password"}).text
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}{FINDINGS}", headers=headers).status_code == 200
        clock[0] += 59.9
        assert httpx.get(f"{url}{FINDINGS}", headers=headers).status_code == 200
        clock[0] += 0.2
        assert httpx.get(f"{url}{FINDINGS}", headers=headers).status_code == 401


def test_spring_page_shape_newest_first(client: tuple[httpx.Client, QualysDouble]) -> None:
    http, _ = client
    page = http.get(FINDINGS, params=WINDOW | {"limit": "10"}).json()
    assert set(page) == {"content", "number", "size", "totalElements", "totalPages", "first", "last",
                         "numberOfElements", "empty"}  # fmt: skip
    assert [f["uuid"] for f in page["content"]] == ["u2", "u3"]  # ties keep load order; size clamped to 2
    assert (page["number"], page["size"], page["totalElements"], page["totalPages"]) == (0, 2, 4, 2)
    assert (page["first"], page["last"], page["numberOfElements"]) == (True, False, 2)
    second = http.get(FINDINGS, params=WINDOW | {"pageNumber": "1", "pageSize": "2"}).json()
    assert [f["uuid"] for f in second["content"]] == ["u5", "u1"]
    assert second["last"] is True


def test_filters(client: tuple[httpx.Client, QualysDouble]) -> None:
    http, _ = client

    def uuids(**params: str) -> list[str]:
        return [
            f["uuid"]
            for f in http.get(FINDINGS, params=WINDOW | {"pageSize": "2"} | params).json()["content"]
        ]

    assert uuids(severity="HIGH", pageSize="2") == ["u3", "u5"]
    assert uuids(severity="4") == ["u2"]
    assert uuids(resourceType="container") == ["u3", "u1"]
    assert uuids(startAt="2026-02-28T10:30:00.000Z", endAt="2026-02-28T11:00:00.999Z") == ["u3", "u5"]
    assert http.get(FINDINGS, params={"severity": "urgent"}).status_code == 400


@contextmanager
def logged_in(config: DoubleConfig | QualysDouble) -> Iterator[httpx.Client]:
    with serve_double(config) as url, httpx.Client(base_url=url) as http:
        token = http.post("/auth", data={"username": "demo", "password": "demo-password"}).text
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def test_one_based_pages_and_ignored_paging() -> None:
    with logged_in(DoubleConfig(findings=DATA, page_base=1, max_page_size=2)) as http:
        first = http.get(FINDINGS, params=WINDOW | {"pageNumber": "1"}).json()
        assert (first["number"], first["first"]) == (1, True)
        assert http.get(FINDINGS, params=WINDOW | {"pageNumber": "0"}).json() == first  # clamped like Spring
    with logged_in(DoubleConfig(findings=DATA, ignore_paging=True, max_page_size=2)) as http:
        pages = [http.get(FINDINGS, params=WINDOW | {"pageNumber": str(n)}).json() for n in range(3)]
        assert pages[0] == pages[1] == pages[2]


def test_window_cap_and_missing_metadata() -> None:
    data = [item(i, f"2026-02-28T10:{i:02d}:00.000Z") for i in range(10)]
    with logged_in(
        DoubleConfig(findings=data, window_cap=5, max_page_size=3, omit_page_metadata=True)
    ) as http:
        pages = [http.get(FINDINGS, params=WINDOW | {"pageNumber": str(n)}).json() for n in range(3)]
    assert [len(p["content"]) for p in pages] == [3, 2, 0]  # nothing past offset 5
    assert all(set(p) == {"content"} for p in pages)


def test_faults_and_counters() -> None:
    faults = [
        Fault(kind="429", every=3, retry_after="2"),
        Fault(kind="500", at=(1,)),
        Fault(kind="html", at=(2,)),
    ]
    double = QualysDouble(DoubleConfig(findings=DATA, faults=faults))
    with serve_double(double) as url:
        statuses = []
        for _ in range(6):
            response = httpx.get(f"{url}{FINDINGS}")
            statuses.append((response.status_code, response.headers.get("retry-after")))
        stats = httpx.get(f"{url}/__double/stats").json()
    assert statuses == [(500, None), (200, None), (429, "2"), (401, None), (401, None), (429, "2")]
    assert double.stats.status[429] == 2
    assert double.stats.faults["html"] == 1
    assert stats["status"]["429"] == 2
    assert stats["findings_requests"] == 6


def test_revoke_fault_invalidates_issued_tokens() -> None:
    double = QualysDouble(DoubleConfig(findings=DATA, faults=[Fault(kind="revoke", at=(2,))]))
    with serve_double(double) as url:
        token = httpx.post(f"{url}/auth", data={"username": "demo", "password": "demo-password"}).text
        headers = {"Authorization": f"Bearer {token}"}
        codes = [httpx.get(f"{url}{FINDINGS}", headers=headers).status_code for _ in range(3)]
    assert codes == [200, 401, 401]


def test_inserts_land_inside_the_window_in_the_part_already_served() -> None:
    data = [item(i, f"2026-02-28T10:{i:02d}:00.000Z") for i in range(20)]
    double = QualysDouble(
        DoubleConfig(findings=data, insert_during_paging=[InsertBatch(after_page=1, count=3)])
    )
    assert len(double.store) == 17
    assert double.total == 20
    with logged_in(double) as http:
        window = {"startAt": "2026-02-28T10:00:00.000Z", "endAt": "2026-02-28T10:30:59.999Z"}
        first = http.get(FINDINGS, params=window | {"pageSize": "5"}).json()
        again = http.get(FINDINGS, params=window | {"pageSize": "5"}).json()
    assert first["totalElements"] == 17
    assert again["totalElements"] == 20
    assert double.stats.inserted == 3
    oldest_served = first["content"][-1]["timestamp"]
    inserted = [f for f in again["content"] if f["uuid"] not in {g["uuid"] for g in first["content"]}]
    assert inserted
    assert all(oldest_served < f["timestamp"] <= "2026-02-28T10:30:59.999Z" for f in inserted)


def test_rebase_to_now_moves_the_newest_finding_to_now() -> None:
    double = QualysDouble(
        DoubleConfig(findings=[*DATA, 7, {"uuid": "bad", "timestamp": "junk"}], rebase_to_now=True)
    )
    newest = double.store.query(0, 2**53, None, None)[0]
    moment = datetime.fromisoformat(newest["timestamp"])
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)
    assert DATA[1]["timestamp"] == "2026-02-28T12:00:00.000Z"  # the caller's data is not mutated
    assert len(double.store) == 7


def test_store_files_records_without_a_timestamp_next_to_their_neighbour() -> None:
    store = FindingStore([item(1, "2026-02-28T10:00:00.000Z"), "junk", item(2, "2026-02-28T09:00:00.000Z")])
    assert store.query(1772272800000, 1772272800000, None, None) == [
        item(1, "2026-02-28T10:00:00.000Z"),
        "junk",
    ]


def test_loads_json_array_wrapped_content_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(DATA))
    (tmp_path / "b.json").write_text(json.dumps({"content": DATA}))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(f) for f in DATA) + "\n")
    assert (
        load_findings(tmp_path / "a.json")
        == load_findings(tmp_path / "b.json")
        == load_findings(tmp_path / "c.jsonl")
    )
    assert len(QualysDouble(DoubleConfig(findings=tmp_path / "c.jsonl")).store) == 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_runs_as_a_module_for_manual_use() -> None:
    port = _free_port()
    findings = str(ROOT / "examples" / "findings.json")
    command = [sys.executable, "-m", "qcdr_ingest.qualys.double", "--findings", findings, "--port", str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy()
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/__double/stats").json()
                break
            except httpx.TransportError:
                assert process.poll() is None, "the double exited"
                assert time.monotonic() < deadline, "the double did not start"
                time.sleep(0.1)
        assert stats["findings"] == 600
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
