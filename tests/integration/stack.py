"""Run qcdr services as real processes on 127.0.0.1 for integration and crash tests."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from qcdr_common.testing.redis_keys import delete_prefixed_keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_cmd(service: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"qcdr_{service}", *args]


@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        fh = self.log.open("ab")
        self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def kill9(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self) -> None:
        self.kill9()
        self.restarts += 1
        self.start()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workdir: Path,
        *,
        database_url: str,
        redis_url: str,
        prefix: str,
        token: str,
        extra_env: dict[str, str] | None = None,
    ) -> Stack:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "QCDR_REDIS_PREFIX": prefix,
            "QCDR_API_TOKEN": token,
            "QCDR_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        return cls(workdir, env)

    @classmethod
    @contextmanager
    def migrated(
        cls,
        workdir: Path,
        *,
        database_url: str,
        redis_url: str,
        prefix: str,
        services: tuple[str, ...],
        extra_env: dict[str, str] | None = None,
    ) -> Iterator[Stack]:
        """A stack with a fresh API token and ``services`` migrated, closed (processes stopped)
        at the end of the block: the usual test fixture."""
        stack = cls.create(
            workdir,
            database_url=database_url,
            redis_url=redis_url,
            prefix=prefix,
            token=f"tok-{uuid.uuid4().hex}",
            extra_env=extra_env,
        )
        stack.migrate(*services)
        try:
            yield stack
        finally:
            stack.close()

    def migrate(self, *services: str) -> None:
        """Each service's migrations, in this process (``qcdr-<svc> db upgrade`` runs the same
        function; a subprocess per service spent seconds importing it). Not thread-safe: Alembic's
        context is global."""
        for service in services:
            module = importlib.import_module(f"qcdr_{service}.db")
            module.upgrade(self.env["DATABASE_URL"])

    def serve(self, service: str, **env: str) -> Proc:
        proc = self.start(service, **env)
        proc.wait_ready()
        return proc

    def start(self, service: str, **env: str) -> Proc:
        """``serve`` without waiting: start several, then ``wait_ready`` each (they boot in parallel)."""
        port = free_port()
        proc = Proc(
            service,
            service_cmd(service, "serve", "--port", str(port)),
            {**self.env, **env},
            self.workdir / f"{service}.log",
            port,
        )
        self.procs[service] = proc
        proc.start()
        return proc

    def consume(self, service: str, *, name: str | None = None, **env: str) -> Proc:
        """``service consume`` as a process; ``name`` tells several of one service apart."""
        name = name or f"{service}-consume"
        proc = Proc(
            name,
            service_cmd(service, "consume", "--metrics-port", "0"),
            {**self.env, **env},
            self.workdir / f"{name}.log",
        )
        self.procs[proc.name] = proc
        proc.start()
        return proc

    def close(self) -> None:
        """Stop the processes, then delete the stack's Redis keys (the machine's Redis outlives
        the test run; a stack's prefix is its own)."""
        for proc in self.procs.values():
            proc.stop()
        delete_prefixed_keys(self.env["REDIS_URL"], self.env["QCDR_REDIS_PREFIX"])
