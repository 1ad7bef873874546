"""``qcdr run``: flags, bad input, exit codes, state, the controller loop and ``--apply``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_ingest.qualys.demo_data import generate_findings
from rich.console import Console
from typer.testing import CliRunner

from qcdr import loop
from qcdr.cli import app
from qcdr.pipeline import RunOptions
from qcdr.sources import SourceResult

runner = CliRunner()


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "findings.json"
    path.write_bytes(orjson.dumps(generate_findings(300, seed=5, now=datetime.now(UTC))))
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["run", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--once", "--action", "Nuke"], "--action must be one of"),
        (["--once", "--interval", "soon"], "--interval: not a duration: 'soon'"),
        (["--once", "--threat-intel", "--intel-ttl", "0s"], "--intel-ttl: duration must be positive: '0s'"),
        (["--once", "--metrics-port", "9100"], "--metrics-port is for the controller loop, not --once"),
        (["--once", "--override-hooks", "ebpf"], "--override-hooks must be kprobes or lsm"),
        (["--once", "--tetragon-version", "1.2"], "Tetragon 1.2 is not supported"),
        (["--once", "--kernel", "4.19"], "kernel 4.19 is not supported"),
        (["--once", "--cilium-version", "1.14"], "Cilium 1.14 is not supported"),
        (["--once", "--suspicious-port", "443"], "ordinary traffic"),
        (["--once", "--never-block", "not-a-cidr"], "does not appear to be an IPv4 or IPv6 network"),
        (["--once", "--events-file", "/nonexistent/findings.json"], "no such file"),
        (["--once", "--platform", "MARS1"], "MARS1"),
        (["--once", "--gateway", "http://127.0.0.1:9", "--severity", "bogus"], "unknown severity 'bogus'"),
        # flags --events-file leaves unused, and intel flags without --threat-intel, exited 0
        (["--once", "--events-file", "EVENTS", "--platform", "mars"], "unknown Qualys platform 'mars'"),
        (["--once", "--events-file", "EVENTS", "--gateway", "ftp://x"], "must be an http(s) URL"),
        (["--once", "--events-file", "EVENTS", "--severity", "huge"], "unknown severity 'huge'"),
        (["--once", "--intel-format", "bogus"], "--intel-format must be groups or inline"),
        (["--once", "--intel-ttl", "3x"], "--intel-ttl: not a duration: '3x'"),
        (["--once", "--output", __file__], f"--output {__file__} is a file, not a directory"),
        (["--once", "--state-dir", __file__], f"--state-dir {__file__} is a file, not a directory"),
    ],
)
def test_usage_errors_exit_2_with_a_reason(args: list[str], message: str, events_file: Path) -> None:
    args = [str(events_file) if a == "EVENTS" else a for a in args]
    if not {"--events-file", "--platform", "--gateway"} & set(args):
        args = [*args, "--events-file", str(events_file)]
    code, _, err = _run(*args, env={"QUALYS_USERNAME": "u", "QUALYS_PASSWORD": "p"})
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"{not json", "not a JSON array or JSON lines of findings (unexpected character"),
        (b"\xff\xfe\x00", "not a JSON array or JSON lines of findings (str is not valid UTF-8"),
    ],
)
def test_demo_findings_that_cannot_be_served_are_a_usage_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    """The API double read --findings only once serving: a missing file or bad JSON was a traceback."""
    findings = tmp_path / "findings.json"
    if content is not None:
        findings.write_bytes(content)
    result = runner.invoke(
        app, ["demo", "--no-threat-intel", "--findings", str(findings), "--output", str(tmp_path / "p")]
    )
    assert result.exit_code == 2, result.output
    assert f"qcdr: error: --findings {findings}: {message}" in result.stderr
    assert isinstance(result.exception, SystemExit)


def test_missing_credentials_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QUALYS_USERNAME", "QUALYS_PASSWORD", "QUALYS_ACCESS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    code, _, err = _run("--once")
    assert code == 2
    assert "no Qualys credentials" in err


def test_unreachable_gateway_is_a_one_line_failure(tmp_path: Path) -> None:
    env = {"QUALYS_USERNAME": "u", "QUALYS_PASSWORD": "p", "QCDR_QUALYS_MAX_RETRIES": "0"}
    code, _, err = _run("--once", "--gateway", "http://127.0.0.1:9", "--output", str(tmp_path), env=env)
    assert code == 1
    assert err.startswith("qcdr: error:")
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_bad_lines_in_an_events_file_are_counted_not_fatal(tmp_path: Path, events_file: Path) -> None:
    lines = [orjson.dumps(item) for item in orjson.loads(events_file.read_bytes())[:50]]
    lines.insert(10, b"{this is not json")
    jsonl = tmp_path / "f.jsonl"
    jsonl.write_bytes(b"\n".join(lines))
    code, out, _ = _run("--once", "--events-file", str(jsonl), "--output", str(tmp_path / "p"), "--json")
    assert code == 0
    report = orjson.loads(out)
    assert report["fetched"] == 51
    assert report["totals"]["accounted"] == 51
    assert any(m["id"] == "line 11" for m in report["malformed"]["items"])


def test_malformed_findings_are_summed_up_by_kind_of_fault(tmp_path: Path, events_file: Path) -> None:
    items = orjson.loads(events_file.read_bytes())[:20]
    for i, stamp in enumerate(("2026-13-45T99:99:99Z", "yesterday at noon", "2026-02-30T10:00:00Z")):
        items[i]["timestamp"] = stamp
    path = tmp_path / "f.json"
    path.write_bytes(orjson.dumps(items))
    code, out, _ = _run("--once", "--events-file", str(path), "--output", str(tmp_path / "p"))
    assert code == 0
    # one kind, three faults, and no value cut off at its first colon
    assert "Skipped 3 malformed findings: timestamp '…' is not ISO 8601 (3)" in out


def test_the_malformed_summary_adds_up_when_there_are_many_kinds(tmp_path: Path) -> None:
    """The bundled demo findings hold 12 malformed ones of six kinds: five are named, the rest
    counted, so the line adds up to its total."""
    demo = Path(__file__).parents[2] / "examples" / "findings.json"
    code, out, _ = _run("--once", "--events-file", str(demo), "--output", str(tmp_path / "p"))
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("Skipped "))
    total = int(line.split()[1])
    named = [int(n) for n in re.findall(r"\((\d+)\)", line)]
    other = re.search(r", (\d+) other$", line)
    assert len(named) == 5
    assert other is not None
    assert sum(named) + int(other.group(1)) == total == 12


def test_human_output_follows_the_seed_example(events_file: Path, tmp_path: Path) -> None:
    code, out, _ = _run("--once", "--events-file", str(events_file), "--output", str(tmp_path))
    assert code == 0
    for line in (
        "=== Policy Generation Run:",
        "Fetching CDR events (last 24 hours)...",
        "Event categories:",
        "Generating behavior-based policies...",
        "Extracting network indicators from events...",
        "cdr-dynamic-blocklist.yaml",
        "qualys-cdr-blocklist.yaml",
        "Done.",
    ):
        assert line in out


def test_values_in_the_report_are_text_not_markup(events_file: Path, tmp_path: Path) -> None:
    """A category or an --output path holding '[/x]' (a Rich closing tag) raised MarkupError after
    the files were written: a traceback, exit 1."""
    items = orjson.loads(events_file.read_bytes())[:20]
    items[0]["threatCategory"] = "Odd[/x]"
    path = tmp_path / "f.json"
    path.write_bytes(orjson.dumps(items))
    output = tmp_path / "out[" / "x]"
    code, out, err = _run("--once", "--events-file", str(path), "--output", str(output))
    assert code == 0, err
    assert "  Odd[/x]: 1" in out
    assert f"Created: {output / 'cdr-dynamic-blocklist.yaml'}" in out


def test_dry_run_writes_nothing(events_file: Path, tmp_path: Path) -> None:
    code, out, _ = _run(
        "--once", "--events-file", str(events_file), "--output", str(tmp_path / "p"), "--dry-run", "--json"
    )
    assert code == 0
    assert orjson.loads(out)["files"]
    assert not (tmp_path / "p").exists()


def test_stale_generated_files_are_removed_but_foreign_files_kept(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "cdr-block-old-20200101.yaml").write_text(
        "# Generated by qcdr. Edits are overwritten on the next run.\n"
    )
    (out / "mine.yaml").write_text("kind: ConfigMap\n")
    code, _, _ = _run("--once", "--events-file", str(events_file), "--output", str(out))
    assert code == 0
    assert not (out / "cdr-block-old-20200101.yaml").exists()
    assert (out / "mine.yaml").exists()


def test_state_dir_deduplicates_across_runs(events_file: Path, tmp_path: Path) -> None:
    args = [
        "--once",
        "--events-file",
        str(events_file),
        "--output",
        str(tmp_path / "p"),
        "--state-dir",
        str(tmp_path / "state"),
        "--json",
    ]
    first = orjson.loads(_run(*args)[1])
    second = orjson.loads(_run(*args)[1])
    assert first["already_known"] == 0
    assert second["already_known"] == first["normalized"]
    assert second["events_in_window"] == first["events_in_window"]
    assert (tmp_path / "state" / "watermark.json").exists()


def test_a_file_of_older_findings_is_processed_with_a_state_dir(tmp_path: Path) -> None:
    """The state's window ages out earlier runs' findings; it must not empty this run's file."""
    old = tmp_path / "last-week.json"
    old.write_bytes(orjson.dumps(generate_findings(100, seed=7, now=datetime.now(UTC) - timedelta(days=7))))
    fresh = tmp_path / "today.json"
    fresh.write_bytes(orjson.dumps(generate_findings(50, seed=8, now=datetime.now(UTC))))
    common = ["--once", "--output", str(tmp_path / "p"), "--state-dir", str(tmp_path / "state"), "--json"]

    first = orjson.loads(_run(*common, "--events-file", str(old))[1])
    assert first["normalized"] > 0
    assert first["events_in_window"] == first["normalized"]
    assert first["totals"]["accounted"] == first["fetched"]
    # the next run reads today's file: last week's findings have aged out of the 24 h window
    second = orjson.loads(_run(*common, "--events-file", str(fresh))[1])
    assert second["events_in_window"] == second["normalized"]


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("watermark.json", b'{"fetched_un', [], "watermark.json is not a qcdr watermark"),
        ("watermark.json", b"[]", [], "watermark.json is not a qcdr watermark"),
        ("events.jsonl", b'{"id": "e1"}\n', [], "events.jsonl:1 is not a stored event"),
        ("intel/indicators.json", b'{"form', ["--threat-intel"], "indicators.json is not a qcdr indicator"),
        ("intel/indicators.json", b"[]", ["--threat-intel"], "indicators.json is not a qcdr indicator"),
    ],
)
def test_a_damaged_state_file_is_a_one_line_failure(
    tmp_path: Path, events_file: Path, name: str, content: bytes, extra: list[str], message: str
) -> None:
    """A truncated or hand-edited file in --state-dir fails the cycle like an unreachable gateway
    (one line naming the file and the remedy, exit 1), not with a traceback."""
    state = tmp_path / "state"
    (state / name).parent.mkdir(parents=True)
    (state / name).write_bytes(content)
    args = ["--once", "--events-file", str(events_file), "--output", str(tmp_path / "p")]
    code, _, err = _run(*args, "--state-dir", str(state), *extra, env={"ABUSEIPDB_API_KEY": ""})
    assert code == 1, err
    assert err.startswith("qcdr: error:")
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "to start over" in err
    assert not (tmp_path / "p").exists()


async def test_the_controller_loop_outlives_a_damaged_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop reports the damaged file and tries again after the retry delay: once the operator
    removed it, the next cycle succeeds. It used to end the controller with a traceback."""
    monkeypatch.setattr(loop, "RETRY_AFTER_FAILURE", timedelta(seconds=0.01))
    monkeypatch.delenv("ABUSEIPDB_API_KEY", raising=False)
    state = tmp_path / "state"
    state.mkdir()
    damaged = state / "events.jsonl"
    damaged.write_bytes(b"{not an event}\n")
    retried = asyncio.Event()

    class Source:
        calls = 0

        async def fetch(self, start: datetime, end: datetime, *, progress: object = None) -> SourceResult:
            self.calls += 1
            if self.calls == 2:
                damaged.unlink()  # the operator followed the advice between the cycles
                retried.set()
            return SourceResult(name="test", findings=[])

    err, out = io.StringIO(), io.StringIO()
    task = asyncio.create_task(
        loop.run_loop(
            RunOptions(output=tmp_path / "p", state_dir=state),
            Source(),
            once=False,
            every=timedelta(hours=1),
            json_out=True,
            applier=None,
            console=Console(file=out, markup=False),
            err=Console(file=err, markup=False, soft_wrap=True),
        )
    )
    waiter = asyncio.create_task(retried.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert task not in done, task.result()  # result() re-raises what ended the loop
        assert waiter in done, "the loop did not try again"
        for _ in range(300):  # the second cycle finishes: the watermark is its last write
            if (state / "watermark.json").exists():
                break
            await asyncio.sleep(0.01)
        assert (state / "watermark.json").exists()
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("qcdr: error:")
        assert "events.jsonl:1 is not a stored event" in lines[0]
        assert not task.done()
    finally:
        for pending in (task, waiter):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sample(text: str, name: str, labels: str = "") -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return None


def test_controller_loop_serves_metrics_and_stops_cleanly_on_sigterm(
    events_file: Path, tmp_path: Path
) -> None:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "qcdr",
        "run",
        "--events-file",
        str(events_file),
        "--interval",
        "1h",
        "--output",
        str(tmp_path / "p"),
        "--state-dir",
        str(tmp_path / "s"),
        "--json",
        "--metrics-port",
        str(port),
    ]
    log = tmp_path / "stderr.log"
    with (
        log.open("wb") as errf,
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=os.environ.copy()) as proc,
    ):
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "s" / "watermark.json").exists():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            # the first cycle is recorded once it is reported; the scrape sees it then
            while True:
                with contextlib.suppress(httpx.TransportError):
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                    if _sample(text, "qcdr_run_cycles_total", '{outcome="ok"}') == 1.0:
                        break
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert (_sample(text, "qcdr_run_last_success_timestamp_seconds") or 0) > time.time() - 120
            assert (_sample(text, "qcdr_run_policies") or 0) > 0
            assert (_sample(text, "qcdr_run_findings", '{outcome="mapped"}') or 0) > 0
            assert _sample(text, "qcdr_run_cycle_seconds_count") == 1.0
            assert "python_gc_objects_collected_total" not in text  # its own registry only
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log.read_text()
        finally:
            proc.kill()


@pytest.mark.shared
def test_apply_creates_then_prunes(events_file: Path, tmp_path: Path, shared_path: Path) -> None:
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    with server.serve():
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        args = [
            "--once",
            "--events-file",
            str(events_file),
            "--output",
            str(tmp_path / "p"),
            "--apply",
            "--kubeconfig",
            str(kubeconfig),
            "--json",
        ]
        code, out, err = _run(*args)
        assert code == 0, err
        first = orjson.loads(out)["apply"]
        assert first["created"]
        assert not first["failed"]
        assert len(server.snapshot()) >= len(first["created"])

        code, out, _ = _run(*args)
        assert code == 0
        second = orjson.loads(out)["apply"]
        assert not second["created"]
        assert len(second["unchanged"]) == len(first["created"])

        # Findings of one family only: every other generated object is pruned.
        items = [
            i
            for i in orjson.loads(events_file.read_bytes())
            if isinstance(i, dict) and i.get("threatCategory") == "Crypto_Mining"
        ]
        only = tmp_path / "only.json"
        only.write_bytes(orjson.dumps(items))
        code, out, _ = _run(
            "--once",
            "--events-file",
            str(only),
            "--output",
            str(tmp_path / "p2"),
            "--apply",
            "--kubeconfig",
            str(kubeconfig),
            "--json",
        )
        assert code == 0
        third = orjson.loads(out)["apply"]
        assert third["pruned"]
        remaining = {
            key for key in server.snapshot() if "crypto" not in str(key) and "blocklist" not in str(key)
        }
        assert not [k for k in remaining if "cdr-block" in str(k)]


@pytest.mark.shared
def test_apply_never_prunes_objects_of_other_pipelines(
    events_file: Path, tmp_path: Path, shared_path: Path
) -> None:
    server = K8sTestServer(validator=ManifestValidator(shared_path))
    other = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {
            "name": "threat-intel-blocklist",
            "labels": {"app.kubernetes.io/managed-by": "qcdr", "qcdr.io/pipeline": "threat-intel"},
        },
        "spec": {
            "endpointSelector": {},
            "enableDefaultDeny": {"egress": False, "ingress": False},
            "egressDeny": [{"toCIDRSet": [{"cidr": "203.0.113.0/24"}]}],
        },
    }
    with server.serve():
        server.seed(other)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        code, _, err = _run(
            "--once",
            "--events-file",
            str(events_file),
            "--output",
            str(tmp_path / "p"),
            "--apply",
            "--kubeconfig",
            str(kubeconfig),
            "--json",
        )
        assert code == 0, err
        ccnps = server.objects("CiliumClusterwideNetworkPolicy")
        assert (None, "threat-intel-blocklist") in ccnps
        assert (None, "qualys-cdr-blocklist") in ccnps


def test_override_through_lsm_hooks(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    code, _, err = _run(
        "--once", "--events-file", str(events_file), "--output", str(out), "--action", "Override",
        "--override-hooks", "lsm",
    )  # fmt: skip
    assert code == 0, err
    override = [p for p in out.glob("*.yaml") if "lsmhooks:" in p.read_text()]
    assert override, "no -override policy with lsmhooks was written"
    assert all("kind: TracingPolicy" in p.read_text() for p in override)


def test_run_help_names_every_feed_format_and_the_default_ports() -> None:
    from qcdr_ingest.intel.model import FeedFormat
    from qcdr_response.policies.config import DEFAULT_SUSPICIOUS_PORTS, NEVER_SUSPICIOUS_PORTS

    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    text = " ".join(result.output.replace("│", " ").split())
    formats = text[text.index("format: ") :].split(";")[0]
    named = formats.removeprefix("format: ").replace(" or ", ", ").rstrip(")").split(", ")
    assert set(named) == {f.value for f in FeedFormat}
    marker = "repeatable); default "
    ports = text[text.index(marker) + len(marker) :].split(";")[0]
    assert [int(p) for p in ports.split()] == list(DEFAULT_SUSPICIOUS_PORTS)
    refused = text[text.index("; 53, ") + 2 :].split(" are refused")[0]
    assert {int(p) for p in refused.replace(" and ", ", ").split(", ")} == NEVER_SUSPICIOUS_PORTS
