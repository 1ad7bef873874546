"""The hub client over real TLS: the hub's certificate checked against ``hub_ca_file``, and a client
certificate presented when the hub asks for one (mTLS); without either the call fails as
"unreachable" (no answer), never silently unverified."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from pydantic import SecretStr
from qcdr_common.contracts.federation.v1 import FederationRole
from qcdr_federation.settings import FederationSettings
from qcdr_federation.spoke.client import Credential, HubClient, HubError, HubErrorKind


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    crt, pem = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return crt, pem


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_cert, ca_key = _issue("qcdr test ca", None, ca=True)
    server_cert, server_key = _issue("hub", (ca_cert.subject, ca_key), ip="127.0.0.1")
    client_cert, client_key = _issue("spoke-a", (ca_cert.subject, ca_key))
    ca_crt, _ = _write(tmp_path / "ca", ca_cert, ca_key)
    server_crt, server_pem = _write(tmp_path / "server", server_cert, server_key)
    client_crt, client_pem = _write(tmp_path / "client", client_cert, client_key)
    return {
        "ca": ca_crt,
        "server_crt": server_crt,
        "server_key": server_pem,
        "client_crt": client_crt,
        "client_key": client_pem,
    }


@pytest.fixture
def tls_hub(pki: dict[str, Path]) -> Iterator[str]:
    """A stand-in hub route over TLS that requires a client certificate from the same CA."""
    app = FastAPI()

    @app.get("/federation/v1/commands")
    async def commands() -> dict[str, Any]:
        return {"items": []}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="critical",
            lifespan="off",
            ws="none",
            http="h11",
            loop="asyncio",
            ssl_certfile=str(pki["server_crt"]),
            ssl_keyfile=str(pki["server_key"]),
            ssl_ca_certs=str(pki["ca"]),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def settings(hub_url: str, **kw: Any) -> FederationSettings:
    return FederationSettings(
        _env_file=None,
        role=FederationRole.SPOKE,
        hub_url=hub_url,
        cluster_name="spoke-a",
        http_timeout_s=5.0,
        **kw,
    )


async def call(client: HubClient) -> list[Any]:
    client.credential = Credential("cid", SecretStr("cid.secret"))
    try:
        return list(await client.commands(0))
    finally:
        await client.aclose()


async def test_mtls_with_the_hub_ca(tls_hub: str, pki: dict[str, Path]) -> None:
    good = settings(
        tls_hub, hub_ca_file=pki["ca"], client_cert_file=pki["client_crt"], client_key_file=pki["client_key"]
    )
    assert await call(HubClient(good)) == []

    for missing in (
        settings(tls_hub, hub_ca_file=pki["ca"]),  # no client certificate: the hub refuses the handshake
        settings(
            tls_hub, client_cert_file=pki["client_crt"], client_key_file=pki["client_key"]
        ),  # system CAs
    ):
        with pytest.raises(HubError) as failed:
            await call(HubClient(missing))
        assert failed.value.kind is HubErrorKind.UNREACHABLE
