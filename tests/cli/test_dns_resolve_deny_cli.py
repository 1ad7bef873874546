"""``qcdr run --once --threat-intel --dns-resolve-deny``: names on a domain feed are resolved against
a real DNS server on 127.0.0.1 (dnslib) and their addresses denied for their TTL, across runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from qcdr_common.testing.dns_zone import Records, Zone, serve_zone
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_ingest.qualys.demo_data import generate_findings
from typer.testing import CliRunner

from qcdr.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.shared]
runner = CliRunner()
FEED = """# a Maltrail-style trail: one name per line
pool.bad.example
sinkholed.bad.example
v6only.bad.example
gone.bad.example
"""


def _records() -> Records:
    return {
        "pool.bad.example.": [("A", "203.0.113.10", 300), ("AAAA", "2001:db8::10", 300)],
        "sinkholed.bad.example.": [("A", "0.0.0.0", 300)],
        "v6only.bad.example.": [("AAAA", "2001:db8::66", 120)],
    }


@pytest.fixture
def zone() -> Iterator[tuple[int, Zone]]:
    with serve_zone(_records()) as served:
        yield served


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    feed = tmp_path / "bad-domains.txt"
    feed.write_text(FEED)
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        yaml.safe_dump(
            [{"name": "bad-domains", "url": f"file://{feed}", "category": "c2", "format": "domains"}]
        )
    )
    events = tmp_path / "findings.json"
    events.write_bytes(orjson.dumps(generate_findings(20, seed=3, now=datetime.now(UTC))))
    return {"feeds": feeds, "events": events, "out": tmp_path / "out", "state": tmp_path / "state"}


def _args(files: dict[str, Path], port: int, *extra: str) -> list[str]:
    return [
        "run",
        "--once",
        "--events-file",
        str(files["events"]),
        "--output",
        str(files["out"]),
        "--state-dir",
        str(files["state"]),
        "--threat-intel",
        "--feeds",
        str(files["feeds"]),
        "--dns-resolve-deny",
        "--dns-resolver",
        f"127.0.0.1:{port}",
        *extra,
    ]


def test_listed_names_become_a_valid_deny_that_outlives_a_failed_lookup(
    zone: tuple[int, Zone], files: dict[str, Path], shared_path: Path
) -> None:
    port, resolver = zone
    first = runner.invoke(
        app, [*_args(files, port, "--dns-tetragon"), "--json"], env={"ABUSEIPDB_API_KEY": ""}
    )
    assert first.exit_code == 0, first.output
    report = orjson.loads(first.stdout)["dns_resolve_deny"]
    assert report["listed_names"] == 4
    assert report["resolved_names"] == 2
    assert report["failed"] == {"gone.bad.example": "NXDOMAIN"}
    assert report["dropped_never_block"] == {"sinkholed.bad.example": ["0.0.0.0"]}
    assert report["addresses"] == 3

    docs = list(yaml.safe_load_all((files["out"] / "dns-resolve-deny.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["CiliumCIDRGroup"]["spec"]["externalCIDRs"] == [
        "203.0.113.10/32",
        "2001:db8::10/128",
        "2001:db8::66/128",
    ]
    deny = by_kind["CiliumClusterwideNetworkPolicy"]["spec"]
    assert deny["egressDeny"] == [
        {"toCIDRSet": [{"cidrGroupRef": by_kind["CiliumCIDRGroup"]["metadata"]["name"]}]}
    ]
    assert deny["enableDefaultDeny"] == {"egress": False, "ingress": False}
    assert "TracingPolicy" in by_kind
    validator = ManifestValidator(shared_path)
    for doc in docs:
        assert validator.errors(doc) == [], doc["metadata"]["name"]

    # The feed's name stops resolving: its addresses stay until their TTL (300 s) runs out, so a
    # resolver hiccup between CronJob runs unblocks nothing.
    del resolver.records["pool.bad.example."]
    second = runner.invoke(app, [*_args(files, port), "--json"], env={"ABUSEIPDB_API_KEY": ""})
    assert second.exit_code == 0, second.output
    again = orjson.loads(second.stdout)["dns_resolve_deny"]
    assert again["failed"] == {"gone.bad.example": "NXDOMAIN", "pool.bad.example": "NXDOMAIN"}
    assert again["addresses"] == 3
    state = orjson.loads((files["state"] / "dns" / "resolve-deny.json").read_bytes())
    assert sorted(state) == ["2001:db8::10", "2001:db8::66", "203.0.113.10"]
    # without --dns-tetragon the Tetragon policy is not written again
    kinds = {d["kind"] for d in yaml.safe_load_all((files["out"] / "dns-resolve-deny.yaml").read_text())}
    assert kinds == {"CiliumCIDRGroup", "CiliumClusterwideNetworkPolicy"}

    human = runner.invoke(app, _args(files, port), env={"ABUSEIPDB_API_KEY": ""})
    assert human.exit_code == 0, human.output
    assert "0 IOC domains and 4 names on the domain feeds: 1 resolved, 2 failed; 3 addresses denied" in (
        human.output
    )
    assert "Loaded 4 domains from bad-domains" in human.output


def test_apply_applies_and_prunes_the_deny_within_its_own_pipeline(
    zone: tuple[int, Zone], files: dict[str, Path], tmp_path: Path, shared_path: Path
) -> None:
    """--apply applies the resolve-and-deny documents too (they were written and never applied),
    and prunes a group of that pipeline the run no longer makes, never the other pipelines'."""
    port, _ = zone
    stale = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumCIDRGroup",
        "metadata": {
            "name": "qcdr-dns-blocked-007",
            "labels": {"app.kubernetes.io/managed-by": "qcdr", "qcdr.io/pipeline": "dns-resolve-deny"},
        },
        "spec": {"externalCIDRs": ["198.51.100.7/32"]},
    }
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    with server.serve():
        server.seed(stale)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        args = [*_args(files, port), "--apply", "--kubeconfig", str(kubeconfig), "--json"]
        result = runner.invoke(app, args, env={"ABUSEIPDB_API_KEY": ""})
        assert result.exit_code == 0, result.output
        applied = orjson.loads(result.stdout)["apply"]
        assert not applied["failed"], applied["failed"]
        assert applied["pruned"] == ["CiliumCIDRGroup/qcdr-dns-blocked-007"]
        groups = server.objects("CiliumCIDRGroup")
        assert set(groups) == {(None, "qcdr-dns-blocked-000")}
        assert groups[(None, "qcdr-dns-blocked-000")]["spec"]["externalCIDRs"] == [
            "203.0.113.10/32",
            "2001:db8::10/128",
            "2001:db8::66/128",
        ]
        pipelines = {
            o["metadata"]["labels"]["qcdr.io/pipeline"]
            for o in server.objects("CiliumClusterwideNetworkPolicy").values()
        }
        assert {"cdr", "dns-resolve-deny"} <= pipelines  # the CDR batch's objects were not pruned


@pytest.mark.parametrize("content", [b'{"203.0.113.10": {"expi', b"[]", b"null"])
def test_a_damaged_address_cache_is_started_afresh(
    zone: tuple[int, Zone], files: dict[str, Path], content: bytes
) -> None:
    """The addresses are resolved again, so a damaged cache costs nothing but a warning; valid JSON
    of another shape ([] or null) crashed the run with an AttributeError."""
    port, _ = zone
    cache = files["state"] / "dns" / "resolve-deny.json"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    result = runner.invoke(app, [*_args(files, port), "--json"], env={"ABUSEIPDB_API_KEY": ""})
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)["dns_resolve_deny"]
    assert f"{cache}: unreadable, started afresh" in report["warnings"]
    assert report["addresses"] == 3
    assert sorted(orjson.loads(cache.read_bytes())) == ["2001:db8::10", "2001:db8::66", "203.0.113.10"]


@pytest.mark.parametrize(
    ("extra", "drop", "message"),
    [
        (["--dns-resolver", "dns.example"], None, "not an IP address"),
        (["--dns-resolver", "127.0.0.1:99999"], None, "the port must be 1-65535"),
        (["--dns-resolver", "127.0.0.1:\xb2"], None, "the port must be 1-65535"),  # '²'.isdigit()
    ],
)
def test_usage_errors(files: dict[str, Path], extra: list[str], drop: str | None, message: str) -> None:
    args = [a for a in _args(files, 53) if a != drop] + extra
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert not files["out"].exists()


def test_the_findings_ioc_domains_are_denied_without_feeds(
    zone: tuple[int, Zone], files: dict[str, Path], shared_path: Path
) -> None:
    """The domains CDR findings name (iocs.json) are resolved and denied first, with or without
    --threat-intel; names that only resolve inside a cloud or a cluster are left out, said so."""
    port, resolver = zone
    resolver.records["c2.evil.example."] = [("A", "198.51.100.77", 600)]
    findings = generate_findings(6, seed=3, now=datetime.now(UTC))
    findings[0]["networkInformation"] = {
        "protocol": "TCP",
        "domain": "c2.evil.example",
        "destinationPort": 443,
    }
    findings[1]["networkInformation"] = {"protocol": "TCP", "domain": "metadata.google.internal"}
    files["events"].write_bytes(orjson.dumps(findings))
    args = [a for a in _args(files, port) if a not in ("--threat-intel", "--feeds", str(files["feeds"]))]
    result = runner.invoke(app, [*args, "--json"], env={"ABUSEIPDB_API_KEY": ""})
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)["dns_resolve_deny"]
    assert (report["ioc_names"], report["listed_names"], report["resolved_names"]) == (1, 0, 1)
    assert any("metadata.google.internal" in w for w in report["warnings"])
    docs = list(yaml.safe_load_all((files["out"] / "dns-resolve-deny.yaml").read_text()))
    group = next(d for d in docs if d["kind"] == "CiliumCIDRGroup")
    assert group["spec"]["externalCIDRs"] == ["198.51.100.77/32"]
    validator = ManifestValidator(shared_path)
    for doc in docs:
        assert validator.errors(doc) == [], doc["metadata"]["name"]
