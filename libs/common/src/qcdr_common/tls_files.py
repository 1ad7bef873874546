"""Loading TLS files users name in configuration (a CA bundle, a client certificate and key), with
a one-line ValueError naming the file and why: a missing or non-PEM file is then a configuration
error at start-up instead of a traceback when a client is first built.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

_SSL_NOISE = re.compile(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


def _reason(exc: OSError) -> str:
    # ssl says "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4154)"
    if isinstance(exc, ssl.SSLError):
        detail = _SSL_NOISE.sub("", exc.strerror or str(exc))
        return "not valid PEM" if detail in ("", "PEM lib") else detail
    return exc.strerror or str(exc)


def ca_context(ca_file: str | Path) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_file``; ValueError (one line) when it cannot be loaded."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except OSError as exc:  # ssl.SSLError is one
        raise ValueError(f"cannot load {ca_file} as CA certificates: {_reason(exc)}") from None


def load_client_certificate(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    """Load a client certificate (and key) into ``context``; ValueError (one line) when it cannot be.

    An encrypted key is refused rather than prompting for its passphrase on a terminal (there is no
    passphrase setting)."""
    try:
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except OSError as exc:
        files = f"{cert_file} and {key_file}" if key_file else cert_file
        raise ValueError(
            f"cannot load {files} as a PEM certificate and unencrypted key: {_reason(exc)}"
        ) from None
