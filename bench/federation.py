"""Benchmark: federation (issue #10) — one hub worker, many simulated spokes.

1. **Policy propagation** (Karmada's published format: P50/P90/P99 distribution latency). ``--spokes``
   simulated spokes (default 100) hold the hub's long poll (``GET /federation/v1/policies`` with
   ``If-None-Match``), as ``qcdr-federation`` in spoke role does; the driver changes one federated
   policy placed on all of them (``PUT /v1/federated-policies/{id}``) ``--changes`` times, and each
   latency is from just before the PUT to the moment a spoke holds the new generation. The spokes
   heartbeat every 10 s meanwhile, from a second process (in the driver's event loop they delayed
   its reading of the answers by up to 2 s: the client was measured, not the hub). Goal: p99 <= 1 s.
2. **Heartbeat capacity.** ``--heartbeat-spokes`` registered spokes (default 1,000); closed loop with
   32 concurrent senders for ``--seconds``: the heartbeats/s one hub worker answers, times the 10 s
   interval = the spokes it sustains. Then open loop at exactly the rate those spokes need
   (spokes / 10 per second) for ``--seconds``: p50/p99 latency and whether the rate was kept.
   Each heartbeat carries the status of the placed policy (what a real spoke sends). Goal: >= 1,000.

The hub is ``qcdr-federation serve`` (uvicorn, one worker) in role hub on a scratch database
(DATABASE_URL's server; dropped afterwards) and Redis (REDIS_URL, a fresh key prefix). The spokes
are coroutines in this process: client and server share the machine's cores.

    uv run python bench/federation.py [--spokes 100] [--changes 20] [--heartbeat-spokes 1000]
        [--seconds 10] [--json] [--write-doc docs/PERFORMANCE.md]
"""

# ruff: noqa: E501, ASYNC110  (table rows as they appear in the document; the driver polls shared state)

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from doc import machine, update_section  # type: ignore[import-not-found,unused-ignore]
from qcdr_common.testing.redis_keys import delete_prefixed_keys
from scratch import scratch_database  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 10.0
TOKEN = "bench-" + secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def hub(database_url: str) -> Iterator[str]:
    port = free_port()
    prefix = f"bench-fed-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "QCDR_REDIS_PREFIX": prefix,
        "QCDR_API_TOKEN": TOKEN,
        "FEDERATION_ROLE": "hub",
        "QCDR_CLUSTER_ID": "hub",
        "QCDR_LOG_LEVEL": "WARNING",
        # the long poll is held as long as the spokes ask (30 s)
        "QCDR_FEDERATION_LONG_POLL_MAX_S": "30",
    }
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qcdr_federation", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"the hub exited:\n{log.read().decode(errors='replace')[-3000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the hub did not become ready in 60 s")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            # the machine's Redis outlives the run: leave nothing of it behind
            delete_prefixed_keys(env["REDIS_URL"], prefix)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Spoke:
    name: str
    credential: str
    etag: str | None = None
    generation: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


async def register(client: httpx.AsyncClient, names: list[str], labels: dict[str, str]) -> list[Spoke]:
    sem = asyncio.Semaphore(16)

    async def one(name: str) -> Spoke:
        async with sem:
            r = await client.post(
                "/v1/clusters", json={"name": name, "labels": labels}, headers=admin_headers()
            )
            r.raise_for_status()
            r = await client.post(f"/v1/clusters/{name}/bootstrap-tokens", json={}, headers=admin_headers())
            r.raise_for_status()
            token = r.json()["token"]
            r = await client.post(
                "/federation/v1/register",
                json={"cluster_name": name, "bootstrap_token": token, "version": "bench"},
            )
            r.raise_for_status()
            return Spoke(name, r.json()["credential"])

    return list(await asyncio.gather(*(one(n) for n in names)))


def tracing_policy(marker: int) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "bench-block-nc", "annotations": {"bench/marker": str(marker)}},
        "spec": {
            "kprobes": [
                {
                    "call": "sys_execve",
                    "syscall": True,
                    "args": [{"index": 0, "type": "string"}],
                    "selectors": [
                        {
                            "matchArgs": [{"index": 0, "operator": "Equal", "values": ["/usr/bin/nc"]}],
                            "matchActions": [{"action": "Sigkill"}],
                        }
                    ],
                }
            ]
        },
    }


def policy_body(marker: int, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "bench-block-nc",
        "template": tracing_policy(marker),
        "placement": {"cluster_selector": {"match_labels": selector}},
        "enforce": True,
    }


def heartbeat_body(policy_id: str | None, generation: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    policies = (
        [
            {
                "policy_id": policy_id,
                "generation": max(generation, 1),
                "content_hash": "0" * 64,
                "state": "applied",
                "observed_at": now,
            }
        ]
        if policy_id
        else []
    )
    body = {
        "sent_at": now,
        "version": "bench",
        "node_count": 12,
        "pod_count": 340,
        "counts": {"events_forwarded": 1000, "findings_forwarded": 10},
        "policies": policies,
    }
    return orjson.dumps(body)


def generation_of(body: dict[str, Any], policy_id: str) -> int:
    for p in body.get("policies", []):
        if p["policy_id"] == policy_id:
            return int(p["generation"])
    return 0


async def long_poll(client: httpx.AsyncClient, spoke: Spoke, policy_id: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        headers = dict(spoke.headers)
        if spoke.etag:
            headers["If-None-Match"] = spoke.etag
        try:
            r = await client.get("/federation/v1/policies", params={"wait": 30}, headers=headers, timeout=40)
        except httpx.HTTPError:
            await asyncio.sleep(0.1)
            continue
        now = time.perf_counter()
        if r.status_code == 200:
            spoke.etag = r.headers.get("ETag")
            generation = generation_of(r.json(), policy_id)
            if generation > spoke.generation:
                spoke.generation = generation
                spoke.arrivals[generation] = now
        elif r.status_code != 304:
            await asyncio.sleep(0.1)


async def heartbeats(client: httpx.AsyncClient, spoke: Spoke, policy_id: str, stop: asyncio.Event) -> None:
    await asyncio.sleep(HEARTBEAT_S * (hash(spoke.name) % 1000) / 1000)
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError):
            await client.post(
                "/federation/v1/heartbeat",
                content=heartbeat_body(policy_id, spoke.generation),
                headers={**spoke.headers, "Content-Type": "application/json"},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_S)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def heartbeat_process(url: str, credentials: list[tuple[str, str]], policy_id: str, seconds: float) -> None:
    """The spokes' heartbeats, from a process of their own: in the driver's event loop they would
    delay its reading of the long-poll answers (the client, not the hub, would be measured)."""

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            stop = asyncio.Event()
            spokes = [Spoke(name, credential) for name, credential in credentials]
            tasks = [asyncio.create_task(heartbeats(client, s, policy_id, stop)) for s in spokes]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


async def propagation(url: str, spokes_n: int, changes: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        spokes = await register(client, [f"prop-{i:04d}" for i in range(spokes_n)], {"bench": "propagation"})
        r = await client.post(
            "/v1/federated-policies", json=policy_body(0, {"bench": "propagation"}), headers=admin_headers()
        )
        r.raise_for_status()
        policy_id = r.json()["id"]
        beating = multiprocessing.get_context("spawn").Process(
            target=heartbeat_process,
            args=(url, [(s.name, s.credential) for s in spokes], policy_id, 30 + changes * 2.5),
            daemon=True,
        )
        beating.start()
        stop = asyncio.Event()
        # one HTTP client per spoke, as each real spoke has: one pool of 100+ connections in httpx
        # costs the reader so much bookkeeping that a few answers were read over a second late
        own = [httpx.AsyncClient(base_url=url, timeout=40) for _ in spokes]
        tasks = [
            asyncio.create_task(long_poll(c, s, policy_id, stop)) for c, s in zip(own, spokes, strict=True)
        ]
        # every spoke holds generation 1 and is parked in its long poll
        deadline = time.monotonic() + 30
        while any(s.generation < 1 for s in spokes) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        latencies: list[float] = []
        put_ms: list[float] = []
        missed = 0
        for k in range(1, changes + 1):
            t0 = time.perf_counter()
            r = await client.put(
                f"/v1/federated-policies/{policy_id}",
                json=policy_body(k, {"bench": "propagation"}),
                headers=admin_headers(),
            )
            put_ms.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            generation = int(r.json()["generation"])
            deadline = time.monotonic() + 10
            while any(s.generation < generation for s in spokes) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            for s in spokes:
                if generation in s.arrivals:
                    latencies.append(s.arrivals[generation] - t0)
                else:
                    missed += 1
            # one change at a time: the next starts after every spoke has asked again
            await asyncio.sleep(1.0)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in own:
            await c.aclose()
        beating.terminate()
        beating.join(10)
    ms = [v * 1000 for v in latencies]
    return {
        "spokes": spokes_n,
        "changes": changes,
        "deliveries": len(ms),
        "missed": missed,
        "put_p50_ms": statistics.median(put_ms),
        "p50_ms": pct(ms, 0.50) if ms else None,
        "p90_ms": pct(ms, 0.90) if ms else None,
        "p99_ms": pct(ms, 0.99) if ms else None,
        "max_ms": max(ms) if ms else None,
    }


async def heartbeat_capacity(url: str, spokes_n: int, seconds: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        spokes = await register(client, [f"hb-{i:05d}" for i in range(spokes_n)], {"bench": "heartbeat"})
        r = await client.post(
            "/v1/federated-policies", json=policy_body(0, {"bench": "heartbeat"}), headers=admin_headers()
        )
        r.raise_for_status()
        policy_id = r.json()["id"]

        async def send(spoke: Spoke) -> tuple[float, int]:
            t = time.perf_counter()
            r = await client.post(
                "/federation/v1/heartbeat",
                content=heartbeat_body(policy_id, 1),
                headers={**spoke.headers, "Content-Type": "application/json"},
            )
            return time.perf_counter() - t, r.status_code

        # closed loop: as many as one hub worker answers
        done = 0
        errors = 0
        end = time.perf_counter() + seconds
        counter = 0

        async def sender() -> None:
            nonlocal done, errors, counter
            while time.perf_counter() < end:
                spoke = spokes[counter % len(spokes)]
                counter += 1
                _, status = await send(spoke)
                done += 1
                if status != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(32)))
        max_rate = done / (time.perf_counter() - t0)

        # open loop at the rate the registered spokes need
        rate = spokes_n / HEARTBEAT_S
        interval = 1.0 / rate
        results: list[tuple[float, int]] = []
        pending: list[asyncio.Task[tuple[float, int]]] = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(send(spokes[i % len(spokes)])))
        results = await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
        lat = [r[0] * 1000 for r in results]
        open_errors = sum(1 for r in results if r[1] != 200)
    return {
        "spokes": spokes_n,
        "closed_loop_heartbeats_per_s": max_rate,
        "closed_loop_errors": errors,
        "sustained_spokes_at_10s": int(max_rate * HEARTBEAT_S),
        "open_loop_rate": rate,
        "open_loop_achieved": n / elapsed,
        "open_loop_p50_ms": statistics.median(lat),
        "open_loop_p99_ms": pct(lat, 0.99),
        "open_loop_errors": open_errors,
    }


def run(spokes: int, changes: int, heartbeat_spokes: int, seconds: float) -> dict[str, Any]:
    from qcdr_federation.db import upgrade

    with scratch_database("federation", upgrade) as database_url, hub(database_url) as url:
        prop = asyncio.run(propagation(url, spokes, changes))
    with scratch_database("federation", upgrade) as database_url, hub(database_url) as url:
        hb = asyncio.run(heartbeat_capacity(url, heartbeat_spokes, seconds))
    return {"propagation": prop, "heartbeat": hb}


def section(result: dict[str, Any]) -> str:
    p, h = result["propagation"], result["heartbeat"]
    today = datetime.now(UTC).date().isoformat()
    p99_ok = p["p99_ms"] is not None and p["p99_ms"] <= 1000 and p["missed"] == 0
    hb_ok = h["sustained_spokes_at_10s"] >= 1000
    return f"""## Federation (issue #10)

Measured {today} on {machine()} with `bench/federation.py`: one hub worker (`qcdr-federation serve`,
role hub, PostgreSQL + Redis on the same machine), simulated spokes as coroutines in the benchmark
process (client and server share the cores).

**Policy propagation** to {p["spokes"]} spokes holding the long poll, {p["changes"]} changes of a policy
placed on all of them, from just before the `PUT` to each spoke holding the new generation (Karmada's
format; Karmada v1.3 published pull-mode P50/P90/P99 612/899/989 ms at 100 clusters). The `PUT`
itself answers after this hub has recomputed the placed sets (median {p["put_p50_ms"]:.0f} ms), so the
first spokes hold the change before it returns; the spread is the spokes' answers being written and
read one after another on two shared cores. Each simulated spoke has its own HTTP client and the
heartbeats come from a second process, as with real spokes; changes are one second apart:

| spokes | deliveries | missed | P50 | P90 | P99 | max | goal P99 ≤ 1 s |
|---:|---:|---:|---:|---:|---:|---:|:--|
| {p["spokes"]} | {p["deliveries"]} | {p["missed"]} | {p["p50_ms"]:.0f} ms | {p["p90_ms"]:.0f} ms | {p["p99_ms"]:.0f} ms | {p["max_ms"]:.0f} ms | {"met" if p99_ok else "missed"} |

**Heartbeats** (each carries counts and the placed policy's status), {h["spokes"]} registered spokes:

| closed loop (32 senders) | spokes sustained at a 10 s heartbeat | open loop at {h["open_loop_rate"]:.0f}/s: achieved | p50 | p99 | errors | goal ≥ 1,000 spokes |
|---:|---:|---:|---:|---:|---:|:--|
| {h["closed_loop_heartbeats_per_s"]:.0f} heartbeats/s | {h["sustained_spokes_at_10s"]:,} | {h["open_loop_achieved"]:.0f}/s | {h["open_loop_p50_ms"]:.1f} ms | {h["open_loop_p99_ms"]:.1f} ms | {h["closed_loop_errors"] + h["open_loop_errors"]} | {"met" if hb_ok else "missed"} |
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spokes", type=int, default=100)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--heartbeat-spokes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    result = run(args.spokes, args.changes, args.heartbeat_spokes, args.seconds)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(section(result))
    if args.write_doc:
        update_section(args.write_doc, "federation", section(result))


if __name__ == "__main__":
    main()
