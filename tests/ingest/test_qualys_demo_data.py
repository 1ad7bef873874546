import ipaddress
import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qcdr_ingest.qualys.catalog import BY_ID, CATALOG, CATEGORIES
from qcdr_ingest.qualys.demo_data import DEFAULT_SEED, generate_findings
from qcdr_ingest.qualys.normalize import normalize_all

ROOT = Path(__file__).resolve().parents[2]
COMMITTED_NOW = datetime(2026, 3, 1, tzinfo=UTC)
DOC_NETS = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]


@pytest.fixture(scope="module")
def demo() -> list[Any]:
    return generate_findings(600, DEFAULT_SEED, COMMITTED_NOW)


def destinations(findings: list[Any]) -> tuple[set[str], set[int], set[str]]:
    ips: set[str] = set()
    ports: set[int] = set()
    domains: set[str] = set()
    for f in findings:
        if not isinstance(f, dict):
            continue
        info = f.get("networkInformation") or {}
        for ip in (f.get("destinationIp"), info.get("destinationIp")):
            if ip:
                ips.add(ip)
        for port in (f.get("destinationPort"), info.get("destinationPort")):
            if port:
                ports.add(port)
        if info.get("domain"):
            domains.add(info["domain"])
    return ips, ports, domains


def test_catalog_has_the_forty_events() -> None:
    assert [e.id for e in CATALOG] == [f"QCR{n:03d}" for n in range(1, 41)]
    assert BY_ID["QCR006"].destinations == ("169.254.169.254", "fd00:ec2::254")
    assert BY_ID["QCR022"].ports == (4444, 5555, 6666, 8443, 1337, 31337)
    assert "Cloud_Credentials_Accessed_By_Network_Utility" in CATEGORIES
    assert len(CATEGORIES) == 15
    assert all(re.fullmatch(r"T\d{4}(\.\d{3})?", t) for e in CATALOG for t in e.techniques)


def test_generation_is_deterministic(demo: list[Any]) -> None:
    assert generate_findings(600, DEFAULT_SEED, COMMITTED_NOW) == demo
    assert generate_findings(600, DEFAULT_SEED + 1, COMMITTED_NOW) != demo


def test_committed_example_file_matches_the_generator(demo: list[Any]) -> None:
    committed = json.loads((ROOT / "examples" / "findings.json").read_text())
    assert committed == demo


def test_shape_of_the_demo_data(demo: list[Any]) -> None:
    good = [f for f in demo if isinstance(f, dict) and f.get("uuid") and f.get("threatCategory")]
    categories = Counter(f["threatCategory"] for f in good)
    assert len(categories) >= 10
    assert categories["Cloud_Credentials_Accessed_By_Network_Utility"] > 0
    assert categories["Network_Scanning_Utility"] > 0
    assert len({f.get("namespace") for f in good} - {None}) >= 5
    assert len({f["deploymentName"] for f in good}) >= 8
    pod = re.compile(r"^[a-z0-9-]+-[bcdfghjklmnpqrstvwxz2456789]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}$")
    assert all(pod.match(f["pod"]) for f in good)
    assert all(re.fullmatch(r"(sha256:)?[0-9a-f]{64}", f.get("imageDigest") or f["imageSha"]) for f in good)


def test_network_indicators_cover_what_filtering_must_handle(demo: list[Any]) -> None:
    ips, ports, domains = destinations(demo)
    parsed = [ipaddress.ip_address(ip) for ip in ips]
    assert any(ip.version == 6 for ip in parsed)
    assert any(any(ip in net for net in DOC_NETS) for ip in parsed)
    assert any(ip.is_global and not any(ip in net for net in DOC_NETS) for ip in parsed)
    assert any(ip.is_private for ip in parsed)
    assert any(ip.is_loopback for ip in parsed)
    assert any(ip.is_link_local for ip in parsed)
    assert {"169.254.169.254", "fd00:ec2::254"} <= ips
    assert {4444, 3333, 31337, 443, 53} <= ports
    assert domains


def test_victim_fields_are_present_to_be_ignored(demo: list[Any]) -> None:
    assert any(isinstance(f, dict) and f.get("triggeredResource") for f in demo)


def test_timestamps_span_the_last_day(demo: list[Any]) -> None:
    events = normalize_all(demo).events
    times = [e.event_time for e in events]
    assert min(times) >= COMMITTED_NOW - timedelta(hours=24)
    assert max(times) <= COMMITTED_NOW
    assert max(times) - min(times) > timedelta(hours=20)


def test_about_two_percent_malformed_in_every_flavour() -> None:
    findings = generate_findings(1000, 7, COMMITTED_NOW)
    result = normalize_all(findings)
    assert len(result.malformed) == 20
    assert len(result.events) == 980
    reasons = " ".join(m.reason for m in result.malformed)
    for fragment in ("uuid is missing", "not an object", "threatCategory", "severity", "timestamp"):
        assert fragment in reasons
    assert result.invalid_techniques  # a few tactic ids among the techniques


def test_counts_and_bursts_stay_splittable() -> None:
    findings = generate_findings(12_345, 3, COMMITTED_NOW)
    assert len(findings) == 12_345
    per_second = Counter(e.event_time.replace(microsecond=0) for e in normalize_all(findings).events)
    assert max(per_second.values()) < 20


def test_script_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "f.json"
    args = ["--count", "25", "--now", "2026-03-01T00:00:00Z", "--output", str(out)]
    subprocess.run([sys.executable, str(ROOT / "examples" / "generate_findings.py"), *args], check=True)
    assert json.loads(out.read_text()) == generate_findings(25, DEFAULT_SEED, COMMITTED_NOW)
