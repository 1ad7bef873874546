"""``make up`` / ``make down``: the docker-compose set as local processes, no Docker needed.

``up``: find PostgreSQL and Redis (``DATABASE_URL`` / ``REDIS_URL`` when set; else the machine's
servers on 127.0.0.1:5432 and :6379, using database ``qcdr_dev`` and key prefix ``qcdr-dev``;
else throwaway servers started under the run directory, Redis with AOF on), run every service's
migrations (``qcdr-<svc> db upgrade``, as compose's ``migrate`` does), start the five services
with ``qcdr-<svc> serve`` in the background (pid files and logs in the run directory, default
``.run/``) and wait until each answers ``/readyz``. ``down`` stops what ``up`` started: the
services, then any server it started itself (its data stays unless ``--purge``). ``status``
shows what runs.

The API token is ``QCDR_API_TOKEN`` when set, else one generated into ``<run dir>/api-token``
(mode 0600)::

    curl -H "Authorization: Bearer $(cat .run/api-token)" http://127.0.0.1:8101/openapi.json
"""

# S603: every subprocess here runs a local binary (initdb, pg_ctl, redis-server, qcdr-<svc>) with
# arguments this script builds; nothing comes from outside.
# ruff: noqa: S603

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "analysis", "response", "admission", "federation")  # also the migration order
DEFAULT_PORT_BASE = 8101  # the host ports docker-compose.yml publishes
MACHINE_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/qcdr_dev"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
BIN = Path(sys.executable).parent  # the venv `uv run` uses: qcdr-<svc> live beside python


def say(message: str) -> None:
    print(f"devstack: {message}", flush=True)


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise SystemExit(f"devstack: {what} did not open port {port} within {timeout:g} s")
        time.sleep(0.1)


class Stack:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.state_file = run_dir / "state.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self.state, indent=2) + "\n")

    # ------------------------------------------------------------------ datastores

    def postgres(self) -> str:
        if url := os.environ.get("DATABASE_URL"):
            return url
        managed = self.state.get("postgres")
        if managed and answers("127.0.0.1", managed["port"]):
            return str(managed["url"])
        if not managed and answers("127.0.0.1", 5432):
            asyncio.run(ensure_database(MACHINE_PG))
            return MACHINE_PG
        return self.start_postgres(managed)

    def start_postgres(self, previous: dict[str, Any] | None) -> str:
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        found = str(pg_ctl[-1]) if pg_ctl else shutil.which("pg_ctl")
        if not found:
            raise SystemExit("devstack: no PostgreSQL: set DATABASE_URL or install postgresql")
        bindir = Path(found).parent
        data = self.run_dir / "postgres"
        port = previous["port"] if previous else free_port()
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if as_postgres:
                shutil.chown(data, "postgres")
            init = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
            subprocess.run([*as_postgres, *init], check=True, capture_output=True)
        opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        log = data / "server.log"
        start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", opts, "start"]
        subprocess.run([*as_postgres, *start], check=True, capture_output=True)
        wait_port(port, "PostgreSQL")
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/qcdr_dev"
        asyncio.run(ensure_database(url))
        self.state["postgres"] = {"port": port, "url": url, "data": str(data), "bindir": str(bindir)}
        self.save()
        say(f"started PostgreSQL on 127.0.0.1:{port} (data in {data})")
        return url

    def redis(self) -> str:
        if url := os.environ.get("REDIS_URL"):
            return url
        managed = self.state.get("redis")
        if managed and answers("127.0.0.1", managed["port"]):
            return str(managed["url"])
        if not managed and answers("127.0.0.1", 6379):
            return MACHINE_REDIS
        server = shutil.which("redis-server")
        if not server:
            raise SystemExit("devstack: no Redis: set REDIS_URL or install redis-server")
        data = self.run_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = managed["port"] if managed else free_port()
        # Append-only file on, as in docker-compose.yml: stream entries survive a restart.
        args = ["--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
        args += [
            "--appendonly",
            "yes",
            "--pidfile",
            str(data / "redis.pid"),
            "--logfile",
            str(data / "redis.log"),
        ]
        subprocess.run([server, *args], check=True, capture_output=True)
        wait_port(port, "Redis")
        url = f"redis://127.0.0.1:{port}/0"
        self.state["redis"] = {"port": port, "url": url, "pidfile": str(data / "redis.pid")}
        self.save()
        say(f"started Redis on 127.0.0.1:{port} (AOF in {data})")
        return url

    # ------------------------------------------------------------------ services

    def environment(self, database_url: str, redis_url: str) -> dict[str, str]:
        token = os.environ.get("QCDR_API_TOKEN") or self.generated_token()
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            QCDR_REDIS_PREFIX=os.environ.get("QCDR_REDIS_PREFIX", "qcdr-dev"),
            QCDR_API_TOKEN=token,
            QCDR_LOG_FORMAT=os.environ.get("QCDR_LOG_FORMAT", "json"),
            FEDERATION_ROLE="standalone",
        )
        return env

    def generated_token(self) -> str:
        path = self.run_dir / "api-token"
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        return path.read_text().strip()

    def migrate(self, env: dict[str, str]) -> None:
        """``qcdr-<svc> db upgrade`` in SERVICES order; a service without a ``db`` command is skipped."""
        for service in SERVICES:
            command = [str(BIN / f"qcdr-{service}"), "db", "upgrade"]
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode == 2 and "No such command 'db'" in result.stderr:
                continue  # one process per service: starting a CLI to ask first costs seconds
            if result.returncode != 0:
                raise SystemExit(f"devstack: qcdr-{service} db upgrade failed:\n{result.stderr.strip()}")
            say(result.stdout.strip())

    def running(self, service: str) -> psutil.Process | None:
        """The service's process if its pid file names a live ``qcdr-<svc>`` (never a recycled pid)."""
        pid_file = self.run_dir / f"{service}.pid"
        if not pid_file.exists():
            return None
        try:
            process = psutil.Process(int(pid_file.read_text()))
            if any(f"qcdr-{service}" in part for part in process.cmdline()):
                return process
        except (psutil.Error, ValueError):
            pass
        return None

    def start(self, env: dict[str, str], port_base: int) -> None:
        services = self.state.setdefault("services", {})
        # Ports first: ingest (started first) is told where analysis will listen.
        ports = {
            service: (
                int(services[service]["url"].rsplit(":", 1)[1])
                if self.running(service)
                else free_port()
                if port_base == 0
                else port_base + index
            )
            for index, service in enumerate(SERVICES)
        }
        for service in SERVICES:
            if self.running(service):
                say(f"{service} already runs ({services[service]['url']})")
                continue
            port = ports[service]
            log_path = self.run_dir / "logs" / f"{service}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            command = [str(BIN / f"qcdr-{service}"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            own_env = env
            if service == "ingest":
                # the verdict API asks analysis for DGA scores of names no feed lists
                own_env = {
                    **env,
                    "QCDR_DGA_ANALYSIS_URL": f"http://127.0.0.1:{ports['analysis']}",
                    "QCDR_DGA_ANALYSIS_TOKEN": env["QCDR_API_TOKEN"],
                }
            if service == "federation":
                # the console (/ui) reads the services started before it, with the suite's token
                own_env = {
                    **env,
                    "QCDR_CONSOLE_SERVICE_TOKEN": env["QCDR_API_TOKEN"],
                    **{f"QCDR_CONSOLE_{s.upper()}_URL": services[s]["url"] for s in SERVICES[:4]},
                }
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=own_env, start_new_session=True
                )
            (self.run_dir / f"{service}.pid").write_text(str(process.pid))
            services[service] = {"pid": process.pid, "url": f"http://127.0.0.1:{port}", "log": str(log_path)}
        self.save()

    def wait_ready(self) -> list[str]:
        """Services not ready within the timeout (or dead); empty when all answer /readyz."""
        pending = set(SERVICES)
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while pending and time.monotonic() < deadline:
                for service in sorted(pending):
                    if self.running(service) is None:
                        return [service]
                    try:
                        ready = client.get(self.state["services"][service]["url"] + "/readyz")
                        if ready.status_code == 200:
                            pending.discard(service)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.2)
        return sorted(pending)

    def stop_services(self) -> None:
        processes = {s: p for s in SERVICES if (p := self.running(s)) is not None}
        for process in processes.values():
            process.send_signal(signal.SIGTERM)  # uvicorn finishes in-flight work and exits
        _, alive = psutil.wait_procs(list(processes.values()), timeout=STOP_TIMEOUT_S)
        for process in alive:
            process.kill()
        for service in SERVICES:
            (self.run_dir / f"{service}.pid").unlink(missing_ok=True)
        self.state.pop("services", None)
        if processes:
            say(f"stopped {', '.join(processes)}")

    def stop_datastores(self) -> None:
        if redis := self.state.pop("redis", None):
            cli = shutil.which("redis-cli") or "redis-cli"
            subprocess.run([cli, "-p", str(redis["port"]), "shutdown"], capture_output=True, check=False)
            say("stopped Redis")
        if pg := self.state.pop("postgres", None):
            as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            stop = [str(Path(pg["bindir"]) / "pg_ctl"), "-D", pg["data"], "-m", "fast", "-w", "stop"]
            subprocess.run([*as_postgres, *stop], capture_output=True, check=False)
            say("stopped PostgreSQL")


async def ensure_database(url: str) -> None:
    import asyncpg

    parts = urlsplit(url.replace("+asyncpg", ""))
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    try:
        conn = await asyncpg.connect(admin)
    except (OSError, asyncpg.PostgresError) as exc:
        where = f"{parts.hostname}:{parts.port}"
        raise SystemExit(f"devstack: cannot connect to {where} ({exc}); set DATABASE_URL") from None
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def up(stack: Stack, port_base: int) -> int:
    env = stack.environment(stack.postgres(), stack.redis())
    if not all(stack.running(service) for service in SERVICES):  # else migrated when they started
        stack.migrate(env)
    stack.start(env, port_base)
    failed = stack.wait_ready()
    if failed:
        for service in failed:
            log = Path(stack.state["services"][service]["log"])
            tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
            say(f"{service} is not ready; the end of {log}:\n" + "\n".join(tail))
        stack.stop_services()
        stack.save()
        return 1
    for service in SERVICES:
        say(f"{service:<10} {stack.state['services'][service]['url']}")
    where = "QCDR_API_TOKEN" if os.environ.get("QCDR_API_TOKEN") else stack.run_dir / "api-token"
    say(f"ready; API token: {where}; logs: {stack.run_dir / 'logs'}; stop with: make down")
    return 0


def status(stack: Stack) -> int:
    services = stack.state.get("services", {})
    for service in SERVICES:
        process = stack.running(service)
        url = services.get(service, {}).get("url", "-")
        say(f"{service:<10} {'running' if process else 'stopped':<8} {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="pid files, logs, data")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack (idempotent)")
    start.add_argument(
        "--port-base", type=int, default=DEFAULT_PORT_BASE, help="first service port; 0: any free ports"
    )
    stop = commands.add_parser("down", help="stop what up started")
    stop.add_argument("--purge", action="store_true", help="also delete the run directory (data, logs)")
    commands.add_parser("status", help="what runs")
    args = parser.parse_args(argv)
    stack = Stack(args.run_dir.resolve())
    if args.command == "up":
        return up(stack, args.port_base)
    if args.command == "down":
        stack.stop_services()
        stack.stop_datastores()
        stack.save()
        if args.purge:
            shutil.rmtree(stack.run_dir, ignore_errors=True)
        return 0
    return status(stack)


if __name__ == "__main__":
    sys.exit(main())
