"""The webhook over real TLS: uvicorn on 127.0.0.1 with a certificate from ``qcdr-admission
certs``' CA, httpx verifying against that CA; replacing the files switches new connections to the
new certificate without a restart, while an open keep-alive connection keeps working."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from qcdr_admission.app import create_app
from qcdr_admission.certs import write_dev_certs
from qcdr_admission.cli import cli
from qcdr_admission.tls import ReloadingTLS, uvicorn_config
from typer.testing import CliRunner

from tests.admission.webhook.conftest import admission_settings, privileged_pod, review


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(ca: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=5.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    live = tmp_path / "live"
    write_dev_certs(live, ["localhost"], ip_addresses=["127.0.0.1"])
    port = _free_port()
    config = uvicorn_config(
        create_app(admission_settings()),
        host="127.0.0.1",
        port=port,
        cert=live / "tls.crt",
        key=live / "tls.key",
        reload_interval_s=0.0,
        log_level="warning",
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{port}", live
    finally:
        srv.should_exit = True
        thread.join(10)


def test_https_with_the_dev_ca_and_reload(server: tuple[str, Path], tmp_path: Path) -> None:
    url, live = server
    old_ca = tmp_path / "old-ca.crt"
    shutil.copy(live / "ca.crt", old_ca)
    with _client(old_ca) as first:
        r = first.post(f"{url}/validate", content=orjson.dumps(review(privileged_pod())))
        assert r.status_code == 200
        assert r.json()["response"]["allowed"] is False
        assert r.http_version == "HTTP/1.1"

        # rotate: a new CA and serving cert written over the live files (key first, atomically)
        fresh = write_dev_certs(tmp_path / "fresh", ["localhost"], ip_addresses=["127.0.0.1"])
        shutil.copy(fresh.key, live / "tls.key.new")
        (live / "tls.key.new").replace(live / "tls.key")
        shutil.copy(fresh.cert, live / "tls.crt.new")
        (live / "tls.crt.new").replace(live / "tls.crt")

        with _client(fresh.ca_cert) as second:
            r = second.post(f"{url}/validate", content=orjson.dumps(review(privileged_pod())))
            assert r.status_code == 200
        with _client(old_ca) as third, pytest.raises(httpx.ConnectError):
            third.get(f"{url}/healthz")
        # the first client's keep-alive connection was made with the old certificate and still works
        assert first.get(f"{url}/healthz").status_code == 200


def test_half_written_pair_keeps_the_old_certificate(tmp_path: Path) -> None:
    files = write_dev_certs(tmp_path / "a", ["localhost"])
    other = write_dev_certs(tmp_path / "b", ["localhost"])
    tls = ReloadingTLS(files.cert, files.key, interval_s=0)
    before = tls.current
    shutil.copy(other.cert, files.cert)  # new cert, old key: does not load
    assert tls.maybe_reload() is False
    assert tls.current is before
    shutil.copy(other.key, files.key)
    assert tls.maybe_reload() is True
    assert tls.current is not before
    assert tls.maybe_reload() is False  # unchanged since


def test_certs_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["certs", "--out", str(tmp_path), "--dns", "admission.qualys-system.svc", "--dns", "admission"]
    )
    assert result.exit_code == 0, result.output
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert names == ["admission.qualys-system.svc", "admission"]
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert ctx.cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--dns", "bad name!"], 2, "qcdr-admission certs: 'bad name!' is not a DNS name"),
        (["--dns", "a..b"], 2, "qcdr-admission certs: 'a..b' is not a DNS name"),
        (["--ip", "999.1.1.1"], 2, "does not appear to be an IPv4 or IPv6 address"),
        ([], 1, "qcdr-admission certs: cannot write into --out {out}: File exists"),
    ],
)
def test_certs_command_bad_input(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    """A name no client can match was written into the certificate; an --out that is a file was a
    FileExistsError traceback."""
    out = tmp_path / "occupied"
    out.write_text("a file, not a directory\n")
    result = CliRunner().invoke(cli, ["certs", "--out", str(out if code == 1 else tmp_path / "c"), *args])
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert message.format(out=out) in result.stderr
    assert not (tmp_path / "c").exists()


def test_serve_refuses_plain_http_when_tls_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    from qcdr_admission.settings import get_settings

    monkeypatch.delenv("QCDR_ADMISSION_TLS_CERT", raising=False)
    monkeypatch.delenv("QCDR_ADMISSION_TLS_KEY", raising=False)
    monkeypatch.setenv("QCDR_ADMISSION_TLS_REQUIRED", "true")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "QCDR_ADMISSION_TLS_CERT" in result.output


def _unusable_pair(tmp_path: Path, what: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    files = write_dev_certs(tmp_path / "good", ["localhost"])
    other = write_dev_certs(tmp_path / "other", ["localhost"])
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return {
        "cert missing": (tmp_path / "nope.crt", files.key),
        "key missing": (files.cert, tmp_path / "nope.key"),
        "cert a directory": (tmp_path, files.key),
        "cert not PEM": (junk, files.key),
        "key not PEM": (files.cert, junk),
        "key of another cert": (files.cert, other.key),
        "key encrypted": (files.cert, encrypted),
    }[what]


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("cert missing", "QCDR_ADMISSION_TLS_CERT {cert}: No such file or directory"),
        ("key missing", "QCDR_ADMISSION_TLS_KEY {key}: No such file or directory"),
        ("cert a directory", "QCDR_ADMISSION_TLS_CERT {cert}: Is a directory"),
        ("cert not PEM", "QCDR_ADMISSION_TLS_CERT {cert}: no PEM certificate in it"),
        ("key not PEM", "QCDR_ADMISSION_TLS_KEY {key}: no PEM private key in it (or an encrypted one)"),
        ("key of another cert", "QCDR_ADMISSION_TLS_KEY {key}: not the private key of the certificate"),
        # OpenSSL asked for the passphrase on the terminal (and would at every reload)
        ("key encrypted", "QCDR_ADMISSION_TLS_KEY {key}: no PEM private key in it (or an encrypted one)"),
    ],
)
def test_serve_with_unusable_tls_files_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, message: str
) -> None:
    """ReloadingTLS's FileNotFoundError / ssl.SSLError ("PEM lib", naming neither file) escaped
    `serve` as a traceback, where every other configuration mistake is one line and exit 2."""
    from qcdr_admission.settings import get_settings

    cert, key = _unusable_pair(tmp_path, what)
    monkeypatch.setenv("QCDR_ADMISSION_TLS_CERT", str(cert))
    monkeypatch.setenv("QCDR_ADMISSION_TLS_KEY", str(key))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: pytest.fail("served"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve"])
    finally:
        get_settings.cache_clear()
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    expected = "qcdr-admission serve: configuration error: " + message.format(cert=cert, key=key)
    assert result.stderr == expected + "\n"


_WATCHED: list[Path] = []  # the --out directory the audit hook samples while a test runs
_EXPOSED: set[str] = set()
_SAMPLES: list[str] = []


def _sample_key_files(event: str, _args: tuple[object, ...]) -> None:
    if not _WATCHED or event not in {"open", "os.chmod", "os.rename"}:
        return
    out = _WATCHED.pop()  # the hook's own opens are not sampled
    try:
        for path in out.iterdir():
            if path.is_symlink() or not path.is_file() or b"PRIVATE KEY" not in path.read_bytes():
                continue
            _SAMPLES.append(event)
            if path.stat().st_mode & 0o077:
                _EXPOSED.add(path.name)
    finally:
        _WATCHED.append(out)


sys.addaudithook(_sample_key_files)  # audit hooks cannot be removed: inert unless _WATCHED is set


def test_certs_key_bytes_are_never_in_a_file_others_can_read(tmp_path: Path) -> None:
    """The keys went into .ca.key.tmp / .tls.key.tmp created 0644 (umask 022) and were chmodded
    0600 only after the write: for that window the CA key was world-readable. The files under --out
    are sampled at every open, chmod and rename the process makes."""
    out = tmp_path / "out"
    out.mkdir()
    old = os.umask(0o022)
    _WATCHED.append(out)
    try:
        write_dev_certs(out, ["localhost"])
    finally:
        _WATCHED.clear()
        os.umask(old)
    assert _SAMPLES, "never sampled a file holding a key"
    assert not _EXPOSED, f"private key bytes in files others can read: {sorted(_EXPOSED)}"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {
        "ca.crt": "0o644",
        "ca.key": "0o600",
        "tls.crt": "0o644",
        "tls.key": "0o600",
    }


def test_certs_a_stale_temp_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    """A .tls.key.tmp left behind was opened and written through: a symlink there sent the key
    into the file it points at."""
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("unrelated\n")
    (out / ".tls.key.tmp").symlink_to(elsewhere)
    files = write_dev_certs(out, ["localhost"])
    assert elsewhere.read_text() == "unrelated\n"
    assert b"PRIVATE KEY" in files.key.read_bytes()
    assert not files.key.is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
