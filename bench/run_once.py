"""Benchmark: ``qcdr run --once`` over N findings served by the local Qualys CDR API double.

Measures wall time, findings/s and the peak RSS of the qcdr process (a child process, so the
double's memory is not counted), and optionally rewrites docs/PERFORMANCE.md.

    uv run python bench/run_once.py --findings 100000 --write-doc docs/PERFORMANCE.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil
from doc import machine, update_section
from qcdr_ingest.qualys.demo_data import generate_findings
from qcdr_ingest.qualys.double import DoubleConfig, serve_double

ROOT = Path(__file__).resolve().parents[1]


def run(count: int, page_size: int, repeats: int) -> dict[str, float | int]:
    now = datetime.now(UTC).replace(microsecond=0)
    findings = generate_findings(count, seed=42, now=now)
    best: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "findings.json"
        data.write_bytes(orjson.dumps(findings))
        config = DoubleConfig(findings=data, max_page_size=page_size, window_cap=10_000_000)
        with serve_double(config) as base_url:
            for _ in range(repeats):
                out = Path(tmp) / "policies"
                env = {**os.environ, "QUALYS_USERNAME": config.username, "QUALYS_PASSWORD": config.password}
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
                ]
                t0 = time.perf_counter()
                stdout, stderr, code, peak = _run_measured(cmd, env)
                seconds = time.perf_counter() - t0
                if code != 0:
                    raise SystemExit(f"qcdr failed ({code}): {stderr.decode()[-2000:]}")
                report = orjson.loads(stdout)
                result = {
                    "findings": report["fetched"],
                    "seconds": seconds,
                    "findings_per_s": report["fetched"] / seconds,
                    "peak_rss_mb": peak / 2**20,
                    "pages": report["source"]["pages"],
                    "policies": sum(len(f["policies"]) for f in report["families"].values()),
                    **{f"stage_{k}": v for k, v in report["timings"].items()},
                }
                if not best or seconds < float(best["seconds"]):
                    best = result
    return best


def _run_measured(cmd: list[str], env: dict[str, str]) -> tuple[bytes, bytes, int, int]:
    """Run ``cmd``; its peak RSS is sampled every 10 ms (RUSAGE_CHILDREN would count the memory
    the child briefly shares with this process between fork and exec)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.01)
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), proc.returncode, peak


def section(result: dict[str, float | int], count: int, page_size: int) -> str:
    ok_time = "met" if float(result["seconds"]) <= 10 else "missed"
    ok_rss = "met" if float(result["peak_rss_mb"]) <= 500 else "missed"
    row = (
        f"| {int(result['findings']):,} | {int(result['pages']):,} | {int(result['policies'])} "
        f"| {float(result['seconds']):.2f} s | {float(result['findings_per_s']):,.0f} "
        f"| {float(result['peak_rss_mb']):.0f} MB | {ok_time} | {ok_rss} |"
    )
    text = f"""## Once mode over {count:,} findings (issue #2)

Machine: {machine()}. Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.
`qcdr run --once --json` against the local Qualys CDR API double (page size {page_size}), in a child
process; best of the runs; peak RSS of the qcdr process only, sampled every 10 ms.

| findings | pages | policies | time | findings/s | peak RSS | goal ≤ 10 s | goal ≤ 500 MB |
|---|---|---|---|---|---|---|---|
{row}
"""
    stages = ", ".join(
        f"{name} {float(result[f'stage_{name}']):.2f} s"
        for name in ("fetch", "normalize", "generate", "write")
        if f"stage_{name}" in result
    )
    startup = float(result["seconds"]) - sum(float(v) for k, v in result.items() if k.startswith("stage_"))
    text += (
        f"\nStages inside the run (from the report's `timings`): {stages}; interpreter start-up and imports "
        f"{startup:.2f} s.\n"
    )
    return text + NOTES


NOTES = """
Fetching is paging the double over loopback HTTP: the double runs in the benchmark's own process,
so server and client share the 2 cores, and a page of 200 findings costs a request. Normalizing
builds one pydantic `SecurityEvent` per finding; workload, process and network parts are shared
between events and raw findings are released as they are normalized, which is what keeps peak RSS
under the goal. Routing is memoized per (category, techniques) pair, so generation is linear in
the findings with a small constant. Profile with
`py-spy record -o profile.svg -- python -m qcdr run --once --gateway ...`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    result = run(args.findings, args.page_size, args.repeats)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.write_doc:
        update_section(args.write_doc, "once", section(result, args.findings, args.page_size))


if __name__ == "__main__":
    main()
