"""A real rsyslogd on 127.0.0.1 for the syslog sink: UDP (imudp), TCP (imtcp, RFC 6587 octet
counting) and TLS (imtcp with the gtls stream driver, RFC 5425; one port without and one with
client certificates), writing every received message as it arrived (``%rawmsg%``) one a line.

The parsers to check what arrived are in ``syslog_parsers``.

    with run_rsyslog(tmp_path) as rsyslog:
        ...send to rsyslog.tcp_port...
        lines = rsyslog.wait_for_lines(lambda line: delivery_id in line, count=3)

Missing ``rsyslogd`` or its gtls module raises :class:`RsyslogUnavailableError` (tests fail with the
reason; ``make test-deps`` installs Debian's ``rsyslog`` and ``rsyslog-gnutls``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

RSYSLOGD = Path(os.environ.get("QCDR_RSYSLOGD", "/usr/sbin/rsyslogd"))
_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog",
                "/usr/lib64/rsyslog")  # fmt: skip
PROBE = "qcdr-rsyslog-probe"


class RsyslogUnavailableError(RuntimeError):
    """rsyslogd or one of its modules is not installed."""


def find_rsyslog() -> tuple[Path, Path]:
    """``(rsyslogd, module directory)``; raises :class:`RsyslogUnavailableError` saying what to install."""
    if not (RSYSLOGD.is_file() and os.access(RSYSLOGD, os.X_OK)):
        raise RsyslogUnavailableError(f"{RSYSLOGD} not found: install Debian's rsyslog (make test-deps)")
    for directory in (os.environ.get("QCDR_RSYSLOG_MODULES", ""), *_MODULE_DIRS):
        if directory and (Path(directory) / "imtcp.so").is_file():
            if not (Path(directory) / "lmnsd_gtls.so").is_file():
                raise RsyslogUnavailableError(
                    f"rsyslog's TLS driver {directory}/lmnsd_gtls.so is missing: install rsyslog-gnutls "
                    "(make test-deps)"
                )
            return RSYSLOGD, Path(directory)
    raise RsyslogUnavailableError(f"no rsyslog module directory with imtcp.so among {_MODULE_DIRS}")


@dataclass(frozen=True)
class DevPki:
    """A throwaway CA with a server certificate (127.0.0.1, localhost) and a client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_dev_pki(directory: Path) -> DevPki:
    """Make the development CA and certificates in ``directory`` (EC P-256, valid for a day)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise RsyslogUnavailableError(f"the test CA needs the cryptography package: {exc}") from exc

    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("qcdr test CA"))
        .issuer_name(name("qcdr test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), write_key(key, directory / f"{cn}.key")

    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem, server_key = leaf(
        "server",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))],
    )
    client_pem, client_key = leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("qcdr-client")])
    (directory / "server.pem").write_bytes(server_pem)
    (directory / "client.pem").write_bytes(client_pem)
    return DevPki(ca_path, directory / "server.pem", server_key, directory / "client.pem", client_key)


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CONFIG = """\
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{pki.ca_cert}"
       defaultNetstreamDriverCertFile="{pki.server_cert}"
       defaultNetstreamDriverKeyFile="{pki.server_key}")
module(load="imudp")
module(load="imtcp" maxSessions="200")
template(name="qcdr_raw" type="string" string="%rawmsg%\\n")
ruleset(name="qcdr_received") {{
  action(type="omfile" file="{output}" template="qcdr_raw")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="qcdr_received")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="qcdr_received")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="qcdr_received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" ruleset="qcdr_received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
*.* action(type="omfile" file="{work}/rsyslogd-internal.log")
"""


@dataclass
class Rsyslog:
    """A running rsyslogd; ``lines()`` are the raw messages it received (probes left out)."""

    workdir: Path
    output: Path
    udp_port: int
    tcp_port: int
    tls_port: int  # TLS, no client certificate asked
    mtls_port: int  # TLS, a client certificate signed by ``pki.ca_cert`` required
    pki: DevPki
    process: subprocess.Popen[bytes] = field(repr=False)

    def lines(self) -> list[str]:
        if not self.output.exists():
            return []
        text = self.output.read_bytes().decode("utf-8", errors="replace")
        return [line for line in text.split("\n") if line and PROBE not in line]

    def wait_for_lines(self, match: Callable[[str], bool], count: int, timeout_s: float = 10.0) -> list[str]:
        """The received lines that ``match``, once there are at least ``count`` (else raises)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [line for line in self.lines() if match(line)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog received {len(found)} of {count} expected lines: {found}")
            time.sleep(0.02)

    def internal_log(self) -> str:
        path = self.workdir / "rsyslogd-internal.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def run_rsyslog(directory: Path, *, startup_timeout_s: float = 15.0) -> Iterator[Rsyslog]:
    """Start ``rsyslogd -n`` with its own configuration and work directory under ``directory``,
    wait until all four listeners deliver to the output file, stop it afterwards."""
    rsyslogd, modules = find_rsyslog()
    work = directory / "rsyslog"
    work.mkdir(parents=True, exist_ok=True)
    pki = make_dev_pki(work / "pki")
    ports = {
        "udp": _free_port(socket.SOCK_DGRAM),
        "tcp": _free_port(socket.SOCK_STREAM),
        "tls": _free_port(socket.SOCK_STREAM),
        "mtls": _free_port(socket.SOCK_STREAM),
    }
    output = work / "received.log"
    conf = work / "rsyslog.conf"
    conf.write_text(_CONFIG.format(work=work, pki=pki, output=output, **ports))
    check = subprocess.run(
        [str(rsyslogd), "-N1", "-f", str(conf), "-M", str(modules)], capture_output=True, timeout=30
    )
    if check.returncode != 0:
        reason = check.stderr.decode(errors="replace")[-2000:]
        raise RsyslogUnavailableError(f"rsyslogd rejected the test configuration: {reason}")
    log = (work / "rsyslogd.out").open("wb")
    process = subprocess.Popen(
        [str(rsyslogd), "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid"), "-M", str(modules)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    server = Rsyslog(work, output, ports["udp"], ports["tcp"], ports["tls"], ports["mtls"], pki, process)
    try:
        _wait_until_ready(server, startup_timeout_s)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _wait_until_ready(server: Rsyslog, timeout_s: float) -> None:
    import ssl

    deadline = time.monotonic() + timeout_s
    nonce = uuid.uuid4().hex
    pending = {"udp", "tcp", "tls", "mtls"}
    context = ssl.create_default_context(cafile=str(server.pki.ca_cert))
    mutual = ssl.create_default_context(cafile=str(server.pki.ca_cert))
    mutual.load_cert_chain(str(server.pki.client_cert), str(server.pki.client_key))
    while pending:
        if server.process.poll() is not None:
            out = (server.workdir / "rsyslogd.out").read_text(errors="replace")
            raise RsyslogUnavailableError(f"rsyslogd exited with {server.process.returncode}: {out[-2000:]}")
        if time.monotonic() > deadline:
            raise RsyslogUnavailableError(
                f"rsyslogd listeners {sorted(pending)} not ready within {timeout_s:g} s; "
                f"its log: {server.internal_log()[-2000:]}"
            )
        for kind in sorted(pending):
            frame = f"<14>1 - - {PROBE} - - - {kind} {nonce}".encode()
            with suppress(OSError):
                if kind == "udp":
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                        sock.sendto(frame, ("127.0.0.1", server.udp_port))
                    continue
                port = {"tcp": server.tcp_port, "tls": server.tls_port, "mtls": server.mtls_port}[kind]
                with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                    if kind == "tcp":
                        raw.sendall(b"%d %s" % (len(frame), frame))
                    else:
                        ctx = context if kind == "tls" else mutual
                        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                            tls.sendall(b"%d %s" % (len(frame), frame))
        time.sleep(0.1)
        if server.output.exists():
            seen = server.output.read_text(errors="replace")
            pending = {kind for kind in pending if f"{kind} {nonce}" not in seen}
