"""Issue #3 end to end: corpus feeds over local HTTP → ``threat-intel-blocklist.yaml``, checked
against an independent computation; AbuseIPDB through the CLI; apply; ``qcdr intel lookup``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles
from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_ingest.intel.abuseipdb_double import AbuseIPDBDoubleConfig, IPAnswer, serve_abuseipdb_double
from qcdr_ingest.qualys.demo_data import generate_findings
from typer.testing import CliRunner

from qcdr.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.shared]
runner = CliRunner()
CORPUS_FEEDS = {
    "feodo": ("firehol-blocklist-ipsets/feodo.ipset", "c2", "auto"),
    "tor": ("firehol-blocklist-ipsets/tor_exits.ipset", "tor", "auto"),
    "et": ("firehol-blocklist-ipsets/et_compromised.ipset", "compromised", "auto"),
    "cins": ("firehol-blocklist-ipsets/ciarmy.ipset", "scanner", "auto"),
    "drop": ("firehol-blocklist-ipsets/spamhaus_drop.netset", "hijacked", "auto"),
    "level1": ("firehol-blocklist-ipsets/firehol_level1.netset", "aggregate", "auto"),
    "ipsum": ("ipsum/ipsum.txt", "scanner", "first-column"),
}


@pytest.fixture(scope="module")
def feed_server(shared_path: Path) -> Iterator[str]:
    """The corpus served as static files (ETag, Last-Modified, 304), plus failing and empty feeds."""
    web = FastAPI()

    @web.get("/broken.txt")
    def broken() -> Response:
        return Response("upstream exploded", status_code=500)

    @web.get("/empty.txt")
    def empty() -> Response:
        return Response("# nothing listed right now\n", media_type="text/plain")

    web.mount("/", StaticFiles(directory=shared_path / "corpora" / "threat-intel"))
    with serve_app(web, name="corpus-feeds") as url:
        yield url


def _feeds_file(tmp: Path, base: str, extra: list[dict[str, Any]] | None = None) -> Path:
    specs = [
        {"name": name, "url": f"{base}/{path}", "category": cat, "format": fmt}
        for name, (path, cat, fmt) in CORPUS_FEEDS.items()
    ]
    path = tmp / "feeds.yaml"
    path.write_text(yaml.safe_dump(specs + (extra or [])))
    return path


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "findings.json"
    path.write_bytes(orjson.dumps(generate_findings(200, seed=9, now=datetime.now(UTC))))
    return path


def _independent_blocklist(shared: Path) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Plain ipaddress over every data line, minus everything that is not a global address."""
    nets = []
    for path, _, _ in CORPUS_FEEDS.values():
        for line in (shared / "corpora" / "threat-intel" / path).read_text().splitlines():
            token = line.split("#")[0].split(";")[0].split()
            if not token:
                continue
            try:
                nets.append(ipaddress.ip_network(token[0], strict=False))
            except ValueError:
                continue
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in ipaddress.collapse_addresses(n for n in nets if n.version == 4):
        allowed.extend(_global_parts(net))
    return set(ipaddress.collapse_addresses(allowed))


def _global_parts(net: ipaddress.IPv4Network) -> Iterator[ipaddress.IPv4Network]:
    """The parts of ``net`` whose addresses are global (split until each part is uniform)."""
    first, last = net.network_address, net.broadcast_address

    def is_blockable(a: ipaddress.IPv4Address) -> bool:
        return a.is_global and not (a.is_multicast or a.is_reserved)

    if is_blockable(first) == is_blockable(last) and (net.prefixlen >= 24 or _uniform(net)):
        if is_blockable(first):
            yield net
        return
    for sub in net.subnets():
        yield from _global_parts(sub)


def _uniform(net: ipaddress.IPv4Network) -> bool:
    special = [
        ipaddress.ip_network(c)
        for c in (
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/3",
        )
    ]
    return not any(net.overlaps(s) and not net.subnet_of(s) for s in special)


def test_corpus_feeds_to_a_valid_blocklist_matching_an_independent_computation(
    feed_server: str, tmp_path: Path, events_file: Path, shared_path: Path
) -> None:
    feeds = _feeds_file(
        tmp_path,
        feed_server,
        [
            {"name": "broken", "url": f"{feed_server}/broken.txt", "category": "c2"},
            {"name": "quiet", "url": f"{feed_server}/empty.txt", "category": "c2", "may_be_empty": True},
        ],
    )
    args = [
        "run",
        "--once",
        "--events-file",
        str(events_file),
        "--output",
        str(tmp_path / "out"),
        "--threat-intel",
        "--feeds",
        str(feeds),
        "--state-dir",
        str(tmp_path / "state"),
        "--intel-group-size",
        "20000",
        "--json",
    ]
    result = runner.invoke(app, args, env={"ABUSEIPDB_API_KEY": ""})
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)["threat_intel"]
    status = {f["name"]: f["status"] for f in report["feeds"]}
    assert status == {**dict.fromkeys(CORPUS_FEEDS, "fresh"), "broken": "failed", "quiet": "empty"}
    ipsum = next(f for f in report["feeds"] if f["name"] == "ipsum")
    assert ipsum["ips"] == 120_430

    # libyaml: the file has 100,000+ lines, and the pure-Python loader takes seconds on them
    docs = list(
        yaml.load_all((tmp_path / "out" / "threat-intel-blocklist.yaml").read_text(), Loader=yaml.CSafeLoader)
    )
    validator = ManifestValidator(shared_path)
    for doc in docs:
        assert validator.errors(doc) == [], doc["metadata"]["name"]
    groups = [d for d in docs if d["kind"] == "CiliumCIDRGroup"]
    policy = next(d for d in docs if d["kind"] == "CiliumClusterwideNetworkPolicy")
    assert [r["cidrGroupRef"] for r in policy["spec"]["egressDeny"][0]["toCIDRSet"]] == [
        g["metadata"]["name"] for g in groups
    ]
    produced = {ipaddress.ip_network(c) for g in groups for c in g["spec"]["externalCIDRs"]}
    assert {n for n in produced if n.version == 4} == _independent_blocklist(shared_path)
    assert not any(n.overlaps(ipaddress.ip_network("10.0.0.0/8")) for n in produced if n.version == 4)

    # Second run: unchanged files answer 304; the broken feed is still failed, nothing is lost.
    again = runner.invoke(app, args, env={"ABUSEIPDB_API_KEY": ""})
    assert again.exit_code == 0, again.output
    second = orjson.loads(again.stdout)["threat_intel"]
    assert {f["name"]: f["status"] for f in second["feeds"]}["ipsum"] in ("not-modified", "skipped")
    assert second["output"] == report["output"]


def test_human_output_and_size_limit(feed_server: str, tmp_path: Path, events_file: Path) -> None:
    feeds = _feeds_file(tmp_path, feed_server)
    result = runner.invoke(
        app,
        [
            "run",
            "--once",
            "--events-file",
            str(events_file),
            "--output",
            str(tmp_path / "o"),
            "--threat-intel",
            "--feeds",
            str(feeds),
            "--state-dir",
            str(tmp_path / "s"),
            "--intel-max-cidrs",
            "1000",
        ],
        env={"ABUSEIPDB_API_KEY": ""},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Loading threat intelligence feeds..." in out
    assert "Loaded 120430 IPs from ipsum (fresh)" in out
    assert "Known bad IPs:" in out
    assert "→ 1000 CIDRs in 1 group" in out
    assert "Size limit 1000 CIDRs:" in out
    assert "AbuseIPDB: no ABUSEIPDB_API_KEY, reputation not checked" in out


def test_feeds_flag_needs_threat_intel_and_a_valid_file(tmp_path: Path, events_file: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, url: 'ftp://example.org/list', category: c2}\n")
    base = ["run", "--once", "--events-file", str(events_file)]
    assert runner.invoke(app, [*base, "--feeds", str(bad)]).exit_code == 2
    result = runner.invoke(app, [*base, "--threat-intel", "--feeds", str(bad)])
    assert result.exit_code == 2
    assert "qcdr: error:" in result.stderr


def test_reputation_filters_cdr_iocs_and_the_cache_survives_a_restart(tmp_path: Path) -> None:
    findings = [
        {
            "uuid": f"u{i}",
            "threatCategory": "Networking_C2_Communication",
            "severity": 4,
            "timestamp": datetime.now(UTC).isoformat(),
            "destinationIp": ip,
            "destinationPort": 4444,
            "namespace": "web",
            "mitreRulesInfo": {"T1071": {}},
        }
        for i, ip in enumerate(["45.9.148.10", "185.220.101.7", "8.8.8.8"])
    ]
    events = tmp_path / "f.json"
    events.write_bytes(orjson.dumps(findings))
    config = AbuseIPDBDoubleConfig(
        answers={
            "45.9.148.10": IPAnswer(score=95),
            "185.220.101.7": IPAnswer(score=10),
            "8.8.8.8": IPAnswer(score=0, is_whitelisted=True),
        }
    )
    args = [
        "run",
        "--once",
        "--events-file",
        str(events),
        "--output",
        str(tmp_path / "o"),
        "--state-dir",
        str(tmp_path / "s"),
        "--reputation-threshold",
        "50",
        "--json",
    ]
    with serve_abuseipdb_double(config) as url:
        env = {"ABUSEIPDB_API_KEY": config.api_key, "QCDR_ABUSEIPDB_BASE_URL": url}
        first = orjson.loads(runner.invoke(app, args, env=env).stdout)
        assert first["reputation"]["checked"] == 3
        assert set(first["reputation"]["unblocked"]) == {"185.220.101.7", "8.8.8.8"}
        cnp = yaml.safe_load((tmp_path / "o" / "qualys-cdr-blocklist.yaml").read_text().split("---")[0])
        assert cnp["spec"]["egressDeny"][0]["toCIDRSet"] == [{"cidr": "45.9.148.10/32"}]
        second = orjson.loads(runner.invoke(app, args, env=env).stdout)
        assert second["reputation"]["checked"] == 0
        assert second["reputation"]["cached"] == 3


def test_apply_threat_intel_groups(
    feed_server: str, tmp_path: Path, events_file: Path, shared_path: Path
) -> None:
    feeds = _feeds_file(tmp_path, feed_server)
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    with server.serve():
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        base = [
            "run",
            "--once",
            "--events-file",
            str(events_file),
            "--output",
            str(tmp_path / "o"),
            "--state-dir",
            str(tmp_path / "s"),
            "--apply",
            "--kubeconfig",
            str(kubeconfig),
            "--json",
        ]
        result = runner.invoke(
            app,
            [
                *base,
                "--threat-intel",
                "--feeds",
                str(feeds),
                "--intel-group-size",
                "5000",
                "--cilium-version",
                "1.18",
            ],
            env={"ABUSEIPDB_API_KEY": ""},
        )
        assert result.exit_code == 0, result.output
        applied = orjson.loads(result.stdout)["apply"]
        assert not applied["failed"], applied["failed"]
        groups = server.objects("CiliumCIDRGroup")
        assert len(groups) >= 2, applied
        assert (None, "threat-intel-blocklist") in server.objects("CiliumClusterwideNetworkPolicy")
        # A CDR-only run applies and prunes its own objects and leaves the threat-intel ones alone.
        result = runner.invoke(app, base, env={"ABUSEIPDB_API_KEY": ""})
        assert result.exit_code == 0, result.output
        assert server.objects("CiliumCIDRGroup") == groups


def test_intel_lookup(feed_server: str, tmp_path: Path, shared_path: Path) -> None:
    feeds = _feeds_file(tmp_path, feed_server)
    ip = next(
        line.split("\t")[0]
        for line in (shared_path / "corpora/threat-intel/ipsum/ipsum.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    result = runner.invoke(
        app, ["intel", "lookup", ip, "--state-dir", str(tmp_path / "s"), "--feeds", str(feeds), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["blocked"] is True
    assert "ipsum" in doc["feeds"]
    assert runner.invoke(app, ["intel", "lookup", "not-an-ip"]).exit_code == 2
    private = orjson.loads(
        runner.invoke(
            app, ["intel", "lookup", "10.0.0.1", "--state-dir", str(tmp_path / "s"), "--json"]
        ).stdout
    )
    assert private["blocked"] is False


def test_no_readable_feed_is_an_error_not_an_empty_blocklist(
    feed_server: str, tmp_path: Path, events_file: Path
) -> None:
    """Every feed failed and nothing is cached: "nothing listed" would be a guess."""
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        yaml.safe_dump([{"name": "broken", "url": f"{feed_server}/broken.txt", "category": "c2"}])
    )
    state = str(tmp_path / "s")
    lookup = runner.invoke(
        app, ["intel", "lookup", "185.220.101.7", "--state-dir", state, "--feeds", str(feeds)]
    )
    assert lookup.exit_code == 1
    assert "no feed could be read and none is cached (broken)" in lookup.stderr
    again = runner.invoke(app, ["intel", "lookup", "185.220.101.7", "--state-dir", state])
    assert again.exit_code == 1  # nothing was saved that would read as "not listed"

    out = tmp_path / "out"
    args = ["run", "--once", "--events-file", str(events_file), "--output", str(out), "--state-dir", state]
    result = runner.invoke(
        app, [*args, "--threat-intel", "--feeds", str(feeds)], env={"ABUSEIPDB_API_KEY": ""}
    )
    assert result.exit_code == 1
    assert "threat intel: no feed could be read and none is cached (broken)" in result.stderr
    assert not (out / "threat-intel-blocklist.yaml").exists()
    assert any(out.glob("cdr-block-*.yaml"))  # the findings' policies are still written


def test_the_json_report_counts_ipv6_addresses_as_text(tmp_path: Path, events_file: Path) -> None:
    """One IPv6 /32 covers 2**96 addresses, past any JSON integer: orjson refused the report, so
    --json (qcdr demo --json too, whose feeds list IPv6 ranges) ended in a traceback."""
    listed = tmp_path / "nets.txt"
    listed.write_text("45.9.148.0/24\n2a01:4f8::/32\n")  # global: documentation ranges are never blocked
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(yaml.safe_dump([{"name": "local", "url": listed.as_uri(), "category": "c2"}]))
    args = ["run", "--once", "--events-file", str(events_file), "--output", str(tmp_path / "o")]
    args += ["--state-dir", str(tmp_path / "s"), "--threat-intel", "--feeds", str(feeds), "--json"]
    result = runner.invoke(app, args, env={"ABUSEIPDB_API_KEY": ""})
    assert result.exit_code == 0, result.output
    output = orjson.loads(result.stdout)["threat_intel"]["output"]
    assert output["addresses"] == {"ipv4": 256, "ipv6": str(2**96)}


def test_intel_lookup_prints_a_feed_category_as_text(tmp_path: Path) -> None:
    """A category is free text from the feeds file; '[/x]' in it was a Rich closing tag (MarkupError)."""
    listed = tmp_path / "ips.txt"
    listed.write_text("203.0.113.7\n")
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        yaml.safe_dump([{"name": "local", "url": listed.as_uri(), "category": "c2[/x]", "format": "ip"}])
    )
    result = runner.invoke(
        app, ["intel", "lookup", "203.0.113.7", "--state-dir", str(tmp_path / "s"), "--feeds", str(feeds)]
    )
    assert result.exit_code == 0, result.output
    assert "local (c2[/x]): first seen" in result.stdout


@pytest.mark.parametrize(
    "content",
    [
        b'{"format": "qcdr.intel',  # cut short
        b"[]",  # valid JSON of another shape: was AttributeError
        b'{"format": "qcdr.intel.indicators", "version": 1, "feeds": [{}]}',  # was KeyError
    ],
)
def test_intel_lookup_of_a_damaged_indicator_file_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    """The saved indicator set is read before any feed is fetched; damaged, it is named with the
    remedy in one line (exit 1), like a damaged watermark, not a traceback."""
    saved = tmp_path / "s" / "intel" / "indicators.json"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(content)
    result = runner.invoke(app, ["intel", "lookup", "203.0.113.7", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"qcdr: error: {saved} is not a qcdr indicator set (")
    assert result.stderr.strip().endswith("remove it to start over")
    assert len(result.stderr.strip().splitlines()) == 1
