"""Benchmark: the admission webhook (issue #9) over TLS with keep-alive, every PSS check on
(baseline enforced, restricted warned), against a do-nothing FastAPI webhook in the same run.

1. Maximum requests/s: ``wrk -t1 -c16`` for ``--seconds`` against each server (uvicorn, one worker,
   uvloop + httptools, the same TLS certificate from ``qcdr_admission.certs``), the median of
   ``--runs`` runs; the ratio webhook / do-nothing is the figure the issue asks for (goal >= 0.8).
2. Latency at a fixed 2,000 requests/s: wrk paces each of 8 connections with a Lua ``delay()``
   (wrk has no open-loop mode; wrk2 is not packaged), p50/p99 as wrk reports them, measured from
   the request write; the achieved rate is reported beside (goal p99 <= 5 ms).

The review is a realistic ~4 KB Pod (init container + 2 containers, probes, env, volumes) that
baseline allows and restricted warns about, so every check runs and the answer carries warnings.
The webhook runs as ``qcdr-admission serve`` does (``tls.uvicorn_config``), with the decision
log on (PostgreSQL: a scratch database on DATABASE_URL, migrated, dropped afterwards; Redis on
REDIS_URL for the outbox relay) and, in a second row, off. Client and servers share the machine's
cores: read the figures as ratios.

    uv run python bench/admission.py [--seconds 5] [--runs 3] [--json] [--write-doc docs/PERFORMANCE.md]
"""

# ruff: noqa: E501  (the markdown table rows are written as they appear in the document)

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from fastapi import FastAPI, Request, Response
from qcdr_common.testing.redis_keys import delete_prefixed_keys
from scratch import scratch_database  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
RATE = 2000
FIXED_CONNECTIONS = 8
MAX_CONNECTIONS = 16


def review_body() -> bytes:
    probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10, "timeoutSeconds": 2}
    env = [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "x" * 20} for i in range(8)]
    mounts = [{"name": "config", "mountPath": "/etc/app"}, {"name": "data", "mountPath": "/data"}]

    def container(name: str, image: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "livenessProbe": probe,
            "readinessProbe": probe,
            "volumeMounts": mounts,
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        }

    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "shop-api-7d9f8c6b5-x2k4p",
            "generateName": "shop-api-7d9f8c6b5-",
            "namespace": "shop",
            "labels": {"app": "shop-api", "pod-template-hash": "7d9f8c6b5", "team": "payments"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "shop-api-7d9f8c6b5",
                    "uid": "5b3f8f3e-2c39-4b9e-9a47-1f1e8c0e9a11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "shop-api",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
            "initContainers": [container("migrate", "registry.example.com/shop/api:1.42.0")],
            "containers": [
                container("api", "registry.example.com/shop/api:1.42.0"),
                container("proxy", "registry.example.com/infra/envoy:1.31.2"),
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "shop-api"}},
                {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"}
            ],
        },
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "2f6c1e0e-1111-4a4b-9d52-000000000001",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return orjson.dumps(review)


# --------------------------------------------------------------------------- servers


def serve(kind: str, port: int, cert: str, key: str) -> None:
    """Runs in the server subprocess."""
    import uvicorn
    from qcdr_admission.tls import uvicorn_config

    app: Any
    if kind == "noop":
        app = FastAPI()

        @app.post("/validate")  # type: ignore[untyped-decorator,unused-ignore]
        async def validate(request: Request) -> Response:
            review = orjson.loads(await request.body())
            body = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True},
            }
            return Response(orjson.dumps(body), media_type="application/json")

    else:
        from qcdr_admission.app import create_app
        from qcdr_admission.settings import AdmissionSettings

        app = create_app(AdmissionSettings(decisions_enabled=kind == "webhook-log"))
    config = uvicorn_config(
        app, host="127.0.0.1", port=port, cert=Path(cert), key=Path(key), log_level="warning"
    )
    uvicorn.Server(config).run()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(kind: str, certs: Path, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--cert",
            str(certs / "tls.crt"),
            "--key",
            str(certs / "tls.key"),
        ],
        env={**os.environ, **env, "QCDR_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}/validate"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- load


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, script: Path, *, connections: int, seconds: int) -> WrkResult:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return WrkResult(rps, p50, p99, errors)


def lua(body_file: Path, delay_ms: float | None) -> str:
    text = f"""
local f = io.open("{body_file}", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""
    if delay_ms is not None:
        text += f"function delay() return {delay_ms:.3f} end\n"
    return text


@dataclass
class Row:
    name: str
    max_rps: float
    max_p99_ms: float
    fixed_rps: float
    fixed_p50_ms: float
    fixed_p99_ms: float
    errors: int


def sample_answer(url: str, ca: Path, body: Path) -> dict[str, Any]:
    """What the server answers to the benchmark's review (allowed, how many warnings)."""
    import ssl

    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
        response = client.post(url, content=body.read_bytes(), headers={"Content-Type": "application/json"})
    answer = response.json().get("response", {})
    return {"allowed": answer.get("allowed"), "warnings": len(answer.get("warnings", []))}


def measure(targets: list[tuple[str, str]], work: Path, seconds: int, runs: int) -> list[Row]:
    """Every target measured run by run in turn (interleaved), so a drift in the machine's load
    (other processes on the same cores) hits all of them alike."""
    body = work / "review.json"
    saturate = work / "max.lua"
    saturate.write_text(lua(body, None))
    maxes: dict[str, list[WrkResult]] = {name: [] for name, _ in targets}
    fixed: dict[str, list[WrkResult]] = {name: [] for name, _ in targets}
    for _, url in targets:
        wrk(url, saturate, connections=MAX_CONNECTIONS, seconds=1)  # warm-up
    for _ in range(runs):
        for name, url in targets:
            maxes[name].append(wrk(url, saturate, connections=MAX_CONNECTIONS, seconds=seconds))
    for i, (name, _) in enumerate(targets):
        # pace each connection so that the total is RATE, allowing for the service time (wrk's
        # delay starts after the response): the achieved rate is reported as measured
        service_ms = statistics.median(m.p50_ms for m in maxes[name]) / MAX_CONNECTIONS
        delay = max(0.0, 1000.0 * FIXED_CONNECTIONS / RATE - service_ms - 0.15)
        (work / f"fixed{i}.lua").write_text(lua(body, delay))
    for _ in range(runs):
        for i, (name, url) in enumerate(targets):
            fixed[name].append(
                wrk(url, work / f"fixed{i}.lua", connections=FIXED_CONNECTIONS, seconds=seconds)
            )
    return [
        Row(
            name,
            statistics.median(m.rps for m in maxes[name]),
            statistics.median(m.p99_ms for m in maxes[name]),
            statistics.median(f.rps for f in fixed[name]),
            statistics.median(f.p50_ms for f in fixed[name]),
            statistics.median(f.p99_ms for f in fixed[name]),
            sum(m.errors for m in maxes[name]) + sum(f.errors for f in fixed[name]),
        )
        for name, _ in targets
    ]


@contextmanager
def scratch_database_or_none() -> Iterator[str | None]:
    """A migrated scratch database for the decision log, or None when PostgreSQL is not there."""
    import asyncpg
    from qcdr_admission.db import upgrade

    with ExitStack() as stack:
        try:
            url: str | None = stack.enter_context(scratch_database("admission", upgrade))
        except (OSError, asyncpg.PostgresError):
            url = None
        yield url


def run(seconds: int, runs: int) -> dict[str, Any]:
    from qcdr_admission.certs import write_dev_certs

    if shutil.which("wrk") is None:
        raise SystemExit("bench/admission.py needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp, scratch_database_or_none() as database_url:
        work = Path(tmp)
        write_dev_certs(work, ["localhost"], ip_addresses=["127.0.0.1"])
        (work / "review.json").write_bytes(review_body())
        only = os.environ.get("BENCH_ONLY")
        variants: list[tuple[str, str, dict[str, str]]] = [("noop", "do-nothing FastAPI webhook", {})]
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        if database_url is not None:
            env = {
                "DATABASE_URL": database_url,
                "QCDR_REDIS_PREFIX": prefix,
                **dict(e.split("=", 1) for e in os.environ.get("BENCH_LOG_ENV", "").split() if e),
            }
            variants.append(("webhook", "qcdr webhook, decision log off", env))
            variants.append(("webhook-log", "qcdr webhook, decision log on", env))
        else:
            variants.append(("webhook", "qcdr webhook, decision log off", {}))
        with ExitStack() as stack:
            targets = [
                (name, stack.enter_context(server(kind, work, env)))
                for kind, name, env in variants
                if not only or kind in (only, "noop")
            ]
            answers = {
                name: sample_answer(url, work / "ca.crt", work / "review.json") for name, url in targets
            }
            rows = measure(targets, work, seconds, runs)
        stored = None
        if database_url is not None:
            import asyncpg

            async def count() -> int:
                conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
                try:
                    return int(await conn.fetchval("SELECT count(*) FROM admission_decisions"))
                finally:
                    await conn.close()

            stored = asyncio.run(count())
            # the machine's Redis outlives the run: leave nothing of it behind
            delete_prefixed_keys(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), prefix)
    noop = rows[0]
    return {
        "machine": machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "body_bytes": len(review_body()),
        "seconds": seconds,
        "runs": runs,
        "rows": [asdict(r) for r in rows],
        "answers": answers,
        "ratios": {r.name: r.max_rps / noop.max_rps for r in rows[1:]},
        "decisions_stored": stored,
    }


def section(f: dict[str, Any]) -> str:
    lines = [
        "## Admission webhook (issue #9)",
        "",
        f"{f['machine']}; measured {f['date']} by `bench/admission.py`. TLS 1.3 with keep-alive, uvicorn (1 worker, "
        f"uvloop + httptools), a {f['body_bytes']:,}-byte Pod review that baseline allows and restricted warns about "
        f"(every PSS check runs; the webhook answers allowed with {f['answers'][f['rows'][1]['name']]['warnings']} warnings). "
        "The webhook is the service as `serve` runs it: PSS, then the admission policies (the built-in "
        "default-security policy), the image-status cache and the runtime findings reader. `wrk -t1` on the same 2 cores; "
        f"median of {f['runs']} runs of {f['seconds']} s, the servers measured in turn run by run.",
        "",
        "| server | max req/s (c=16) | ratio to do-nothing | p99 at max | req/s paced at 2,000 | p50 / p99 at 2,000 req/s | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in f["rows"]:
        ratio = f["ratios"].get(r["name"])
        lines.append(
            f"| {r['name']} | {r['max_rps']:,.0f} | {'1.00' if ratio is None else f'{ratio:.2f}'} | {r['max_p99_ms']:.2f} ms "
            f"| {r['fixed_rps']:,.0f} | {r['fixed_p50_ms']:.2f} / {r['fixed_p99_ms']:.2f} ms | {r['errors']} |"
        )
    lines.append("")
    goals = []
    for r in f["rows"][1:]:
        ratio = f["ratios"][r["name"]]
        goals.append(
            f"- {r['name']}: p99 at 2,000 req/s {r['fixed_p99_ms']:.2f} ms (goal <= 5 ms: {'met' if r['fixed_p99_ms'] <= 5 else 'missed'}); "
            f"throughput ratio {ratio:.2f} (goal >= 0.8: {'met' if ratio >= 0.8 else 'missed'})."
        )
    lines += goals
    if f.get("decisions_stored") is not None:
        lines.append(
            f"- The decision log stored {f['decisions_stored']:,} decisions in that run (micro-batched, off the request path)."
        )
    lines += [
        "",
        "Where the time goes (measured in-process on 2026-12-05 on a 2-core Intel Xeon, same review, 20,000 "
        "calls of `webhook.router.answer`: decode + parse + evaluate + encode, PSS and the built-in policies): "
        "76 µs, down from 95 µs that morning. The pod view is built once per review and shared by PSS and the "
        "policies; the PSS plans of a review's levels are joined once per set of levels, so each check "
        "revision runs once with no per-request bookkeeping; decoded dicts skip the abstract-class "
        "`isinstance`; the host-probe check formats field paths only for probes that exist. On that machine "
        "the ratio (decision log off) was 0.69 in one run before these changes and 0.83 and 0.78 "
        "in two runs after; on a 2-core AMD EPYC 0.75 and 0.74: the goal is within the run-to-run noise of "
        "two shared cores. "
        "At the do-nothing server's maximum a whole request costs ~140 µs, so a ratio of 0.8 leaves ~35 µs "
        "for everything the webhook adds: the evaluation is about two thirds of what the webhook adds now. "
        "`POST /validate` already skips FastAPI's routing, the auth middleware and the HTTP instrumentator "
        "(a pure ASGI fast path). With the decision log on, the request path only appends; building the "
        "rows, the COPY, the outbox relay and PostgreSQL and Redis themselves take the rest of the two cores "
        "that wrk and the server share. The relay now claims and marks a batch in one statement and adds it "
        "to the stream in one script call (27 -> 9 µs of relay CPU per row, `bench/outbox_relay.py`): on the "
        "AMD machine the ratio with the log went from 0.51 to 0.59 and the p99 at 2,000 req/s from 6.7 to "
        "3.1 ms, under the 5 ms goal. Next steps: run the relay in its own "
        "process, and measure where the load generator and the datastores have their own cores. A verdict "
        "cache for identical pod templates would need every input of a verdict versioned (policies, "
        "namespace levels, image status, runtime findings) before it is safe in a security control.",
        "",
        "wrk has no open-loop mode: the paced runs give each of 8 connections a fixed `delay()` between "
        "its response and its next request, so a slow answer delays the next request (coordinated "
        "omission) and the achieved rate is a little under 2,000 when latency grows. Latency is from "
        "the request write to the response; the TLS handshake is not in it (connections are kept alive, "
        "as the API server does).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-doc", type=Path)
    parser.add_argument("--serve", choices=["noop", "webhook", "webhook-log"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.cert, args.key)
        return
    figures = run(args.seconds, args.runs)
    if args.json:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    else:
        print(section(figures))
    if args.write_doc:
        update_section(args.write_doc, "admission", section(figures))


if __name__ == "__main__":
    main()
