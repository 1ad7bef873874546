"""The console reaches admission over HTTPS once admission is registered as a webhook (it then
serves HTTPS only): QCDR_CONSOLE_ADMISSION_CA_FILE names the CA it trusts. Before, k8s/admission
left the console on http://, and every admission page failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from qcdr_admission.certs import CertFiles, write_dev_certs
from qcdr_common.testing.asgi_server import serve_app
from qcdr_federation.console.backends import Backends
from qcdr_federation.settings import FederationSettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def stats(_: Request) -> JSONResponse:
    return JSONResponse({"allowed": 3})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_dev_certs(tmp_path_factory.mktemp("tls"), ["localhost"], ip_addresses=["127.0.0.1"])


@pytest.fixture(scope="module")
def admission_url(certs: CertFiles) -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/decisions/stats", stats)])
    with serve_app(app, name="admission-tls", tls=(certs.cert, certs.key)) as url:
        yield url


def settings(url: str, ca_file: Path | None) -> FederationSettings:
    return FederationSettings(_env_file=None, console_admission_url=url, console_admission_ca_file=ca_file)


async def test_the_console_trusts_the_webhook_ca_it_is_given(admission_url: str, certs: CertFiles) -> None:
    backends = Backends(settings(admission_url, certs.ca_cert))
    try:
        result = await backends.get("admission", "/v1/decisions/stats")
    finally:
        await backends.aclose()
    assert (result.error, result.data) == (None, {"allowed": 3})


async def test_without_the_ca_admission_is_unavailable_not_trusted(admission_url: str) -> None:
    backends = Backends(settings(admission_url, None))
    try:
        result = await backends.get("admission", "/v1/decisions/stats")
    finally:
        await backends.aclose()
    assert result.error == "cannot connect (ConnectError)"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file or directory"), (b"not a certificate\n", "no certificate or crl found")],
)
def test_a_ca_file_that_cannot_be_used_is_a_settings_error(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    ca = tmp_path / "ca.crt"
    if content is not None:
        ca.write_bytes(content)
    with pytest.raises(
        ValidationError, match=f"(?s)console_admission_ca_file.*cannot load {ca} as CA certificates: {reason}"
    ):
        settings("https://qcdr-admission-webhook.qualys-system.svc", ca)
