"""``qcdr-federation serve`` over HTTPS: a development certificate from QCDR_FEDERATION_TLS_CERT /
_KEY, checked against its CA; plain HTTP without them; one of the two alone is refused."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from qcdr_admission.certs import write_dev_certs  # tests may import any service

pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

CLI = str(Path(sys.executable).with_name("qcdr-federation"))
Start = Callable[..., "subprocess.Popen[bytes]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(database_url: str, redis_url: str, redis_prefix: str, **extra: str) -> dict[str, str]:
    values = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QCDR_", "FEDERATION_", "DATABASE_", "REDIS_"))
    }
    values.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        QCDR_REDIS_PREFIX=redis_prefix,
        QCDR_API_TOKEN="federation-tls-test-token",
        QCDR_LOG_FORMAT="json",
    )
    values.update(extra)
    return values


@pytest.fixture
def serve(
    federation_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[tuple[Path, Start]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, **extra: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env(federation_database_url, redis_url, redis_prefix, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield tmp_path, start
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def wait_for(
    url: str, process: subprocess.Popen[bytes], verify: ssl.SSLContext | bool = True
) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"serve exited with {process.returncode}:\n{output}")
        try:
            return httpx.get(url, timeout=2, verify=verify)
        except httpx.ConnectError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in 30 s")


def test_serves_https_with_the_dev_certificate(serve: tuple[Path, Start]) -> None:
    tmp_path, start = serve
    certs = write_dev_certs(tmp_path / "certs", ["localhost"], ip_addresses=["127.0.0.1"])
    port = free_port()
    process = start(port, QCDR_FEDERATION_TLS_CERT=str(certs.cert), QCDR_FEDERATION_TLS_KEY=str(certs.key))
    response = wait_for(
        f"https://127.0.0.1:{port}/healthz", process, verify=ssl.create_default_context(cafile=certs.ca_cert)
    )
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"

    # verified against the dev CA only: the system trust store does not know it
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=5)
    # and the port speaks TLS only
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_plain_http_without_a_certificate(serve: tuple[Path, Start]) -> None:
    _, start = serve
    port = free_port()
    process = start(port)
    assert wait_for(f"http://127.0.0.1:{port}/healthz", process).status_code == 200


@pytest.mark.parametrize("only", ["QCDR_FEDERATION_TLS_CERT", "QCDR_FEDERATION_TLS_KEY"])
def test_cert_without_key_is_refused(serve: tuple[Path, Start], only: str) -> None:
    tmp_path, start = serve
    certs = write_dev_certs(tmp_path / "certs", ["localhost"])
    process = start(free_port(), **{only: str(certs.cert)})
    assert process.wait(30) == 2
    assert process.stdout is not None
    assert b"QCDR_FEDERATION_TLS_CERT and QCDR_FEDERATION_TLS_KEY" in process.stdout.read()
