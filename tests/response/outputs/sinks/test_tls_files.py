"""TLS files in a sink's configuration are loaded when it is validated: a missing or non-PEM
``ca_file`` (or syslog client certificate) is a configuration error on that field, not a traceback
when the sink is built (``qcdr outputs list``, service start) or a failure of every send; and
``ca_file`` with ``verify_tls: false`` is refused as a contradiction (Splunk HEC and Elasticsearch
used to verify anyway, the webhook and syslog ignored the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ValidationError
from qcdr_common.testing.sinks.rsyslog import DevPki, make_dev_pki
from qcdr_response.outputs.runtime import make_sink
from qcdr_response.outputs.sinks.elasticsearch import ElasticsearchConfig
from qcdr_response.outputs.sinks.splunk_hec import SplunkHecConfig
from qcdr_response.outputs.sinks.syslog import SyslogConfig
from qcdr_response.outputs.sinks.webhook import WebhookConfig

SINKS: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "splunk_hec": (SplunkHecConfig, {"url": "https://splunk.example:8088", "token": "t"}),
    "elasticsearch": (ElasticsearchConfig, {"url": "https://es.example:9200"}),
    "webhook": (WebhookConfig, {"url": "https://hook.example/h"}),
    "syslog": (SyslogConfig, {"host": "siem.example", "protocol": "tls"}),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return make_dev_pki(tmp_path_factory.mktemp("pki"))


def validate(kind: str, **fields: Any) -> BaseModel:
    model, required = SINKS[kind]
    return model.model_validate({"name": "out", **required, **fields})


def refusal(kind: str, **fields: Any) -> tuple[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        validate(kind, **fields)
    [error] = caught.value.errors()
    return error["loc"], error["msg"]


def bad_ca_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "ca.pem"
    if case == "missing":
        return path
    if case == "directory":
        path.mkdir()
    elif case == "not PEM":
        path.write_text("splunk.example\n")
    elif case == "cut short":
        path.write_text("-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpE\n")
    return path


@pytest.mark.parametrize("kind", SINKS)
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "No such file or directory"),
        ("directory", "Is a directory"),
        ("not PEM", "no certificate or crl found"),
        ("cut short", "not valid PEM"),
    ],
)
def test_an_unloadable_ca_file_is_refused_on_that_field(
    tmp_path: Path, kind: str, case: str, reason: str
) -> None:
    path = bad_ca_file(tmp_path, case)
    loc, msg = refusal(kind, ca_file=str(path))
    assert loc == ("ca_file",)
    assert f"cannot load {path} as CA certificates: {reason}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kind", SINKS)
def test_a_ca_file_with_verification_off_is_a_contradiction(kind: str, pki: DevPki) -> None:
    loc, msg = refusal(kind, verify_tls=False, ca_file=str(pki.ca_cert))
    assert loc == ("ca_file",)
    assert "contradicts verify_tls: false" in msg


@pytest.mark.parametrize("kind", SINKS)
async def test_a_pem_ca_file_builds_the_sink(kind: str, pki: DevPki) -> None:
    config = validate(kind, ca_file=str(pki.ca_cert))
    sink = make_sink(config)  # type: ignore[arg-type]
    await sink.aclose()


def test_syslog_loads_the_client_certificate_when_validated(pki: DevPki, tmp_path: Path) -> None:
    tls = {"ca_file": str(pki.ca_cert)}
    validate("syslog", **tls, cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    cert, mismatched = str(pki.client_cert), str(pki.server_key)
    cases = [
        ({"cert_file": str(tmp_path / "missing.pem")}, "No such file or directory"),
        ({"cert_file": str(pki.ca_cert)}, "not valid PEM"),  # a certificate without its key
        ({"cert_file": cert, "key_file": mismatched}, "key values mismatch"),
        # refused, not a passphrase prompt on the terminal: there is no passphrase setting
        ({"cert_file": cert, "key_file": str(encrypted)}, "not valid PEM"),
    ]
    for files, reason in cases:
        _, msg = refusal("syslog", **tls, **files)
        assert "as a PEM certificate and unencrypted key" in msg
        assert reason in msg, msg
