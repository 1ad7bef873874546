"""``qcdr-admission certs``: a development CA and a serving certificate for the webhook.

For clusters without cert-manager (kind, CI): the CA goes into the ValidatingWebhookConfiguration's
``caBundle``, the certificate and key into the Secret the Deployment mounts. ``cryptography`` is
imported only here, when the command runs; the service itself does not need it (it is a
development dependency of the workspace).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_DNS = ("qcdr-admission-webhook.qualys-system.svc",)
# A host name, optionally a wildcard's: what a TLS client can match (RFC 1123 labels).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def write_dev_certs(
    out: Path,
    dns_names: Sequence[str] = DEFAULT_DNS,
    *,
    ip_addresses: Sequence[str] = (),
    days: int = 365,
    ca_common_name: str = "qcdr admission dev CA",
) -> CertFiles:
    """Write ``ca.crt``, ``ca.key``, ``tls.crt`` and ``tls.key`` (ECDSA P-256) into ``out``.

    The serving certificate names ``dns_names`` (and ``ip_addresses``) as subjectAltNames; the
    first DNS name is also its common name. Keys are written with mode 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not dns_names and not ip_addresses:
        raise ValueError("name at least one DNS name or IP address")
    for name in dns_names:
        # cryptography writes any string; a certificate no client can match was the result
        if len(name) > 253 or not _DNS_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a DNS name (letters, digits, '-' and '.')")
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    common = dns_names[0] if dns_names else ip_addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common[:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    files = CertFiles(out / "ca.crt", out / "ca.key", out / "tls.crt", out / "tls.key")

    def private(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.ca_key, private(ca_key), 0o600)
    # write the key first: a reloading server that sees a new cert file already has its key
    _write(files.key, private(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    """``data`` into ``path`` atomically (a reader never sees half a file), with ``mode`` from the
    moment the file exists: a key's bytes are never in a file others can read, not even briefly."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # left by an interrupted run; a symlink there is not followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # exactly ``mode`` whatever the umask (ca.crt and tls.crt stay 0644)
        f.write(data)
        f.flush()
        os.fsync(fd)
    tmp.replace(path)
