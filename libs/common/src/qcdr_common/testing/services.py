"""Find (or start) the PostgreSQL and Redis servers the tests talk to.

Order: ``DATABASE_URL`` / ``REDIS_URL`` when set; else the machine's defaults (PostgreSQL on
127.0.0.1:5432 database ``test``, Redis on 127.0.0.1:6379) when they answer; else throwaway servers
started from the local binaries; else a clear error. Never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class ServiceUnavailableError(RuntimeError):
    pass


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(f"tcp://127.0.0.1:{port}", port):
            return
        time.sleep(0.05)
    raise ServiceUnavailableError(f"server on port {port} did not start within {timeout}s")


@dataclass
class ThrowawayServers:
    """Servers started for one test session, stopped at its end."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qcdr-test-")))
    stops: list[list[str]] = field(default_factory=list)

    def start_postgres(self) -> str:
        # Debian keeps the server binaries (initdb, createdb, ...) together under /usr/lib/postgresql/N/bin.
        installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        pg_ctl = str(installed[-1]) if installed else shutil.which("pg_ctl")
        if not pg_ctl:
            raise ServiceUnavailableError(
                "no PostgreSQL reachable (set DATABASE_URL) and no pg_ctl binary to start one "
                "(apt-get install postgresql)"
            )
        bindir = Path(pg_ctl).parent
        data = self.workdir / "pg"
        data.mkdir()
        port = _free_port()
        as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.workdir, "postgres")
            shutil.chown(data, "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        opts = (
            f"-p {port} -k {self.workdir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off"
        )
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.workdir / "pg.log"),
                "-w",
                "-o",
                opts,
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.stops.append([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        _wait_port(port)
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test"],
            check=True,
            capture_output=True,
        )
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test"

    def start_redis(self) -> str:
        server = shutil.which("redis-server")
        if not server:
            raise ServiceUnavailableError(
                "no Redis reachable (set REDIS_URL) and no redis-server binary to start one "
                "(apt-get install redis-server)"
            )
        port = _free_port()
        subprocess.run(
            [
                server,
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--pidfile",
                str(self.workdir / "redis.pid"),
            ],
            check=True,
            capture_output=True,
        )
        self.stops.append([shutil.which("redis-cli") or "redis-cli", "-p", str(port), "shutdown", "nosave"])
        _wait_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        for cmd in reversed(self.stops):
            subprocess.run(cmd, check=False, capture_output=True)
        self.stops.clear()


def resolve_database_url(servers: ThrowawayServers) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        if not _answers(url, 5432):
            raise ServiceUnavailableError(
                f"DATABASE_URL is set but nothing answers at {urlsplit(url).netloc}"
            )
        return url
    if _answers(DEFAULT_PG, 5432):
        return DEFAULT_PG
    return servers.start_postgres()


def resolve_redis_url(servers: ThrowawayServers) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        if not _answers(url, 6379):
            raise ServiceUnavailableError(f"REDIS_URL is set but nothing answers at {urlsplit(url).netloc}")
        return url
    if _answers(DEFAULT_REDIS, 6379):
        return DEFAULT_REDIS
    return servers.start_redis()
