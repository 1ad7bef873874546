"""HTTPS for the webhook: the serving certificate and key are read from files and reloaded when
they change, without a restart and without dropping connections.

The listening :class:`ssl.SSLContext` carries an SNI callback (OpenSSL calls it for every
ClientHello, with or without SNI). The callback looks at the files' modification times at most
every ``interval_s`` seconds; when they changed it builds a new context from them, and it switches
every new handshake to the newest context. Established connections keep the certificate they were
made with. A half-written pair (a new cert with the old key, as a Secret volume update may show
for a moment) fails to load: the old context stays in use and the files are tried again at the
next interval.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from qcdr_common.logging import get_logger

log = get_logger(__name__)

_Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


class TLSFilesError(ValueError):
    """The certificate or the key file cannot be used: :attr:`which` one, and why (no file content)."""

    def __init__(self, which: Literal["cert", "key"], path: Path, reason: str) -> None:
        super().__init__(f"{which} {path}: {reason}")
        self.which, self.path, self.reason = which, path, reason


def _no_passphrase() -> bytes:
    # an encrypted key fails to load instead of OpenSSL prompting on the terminal (at every reload)
    return b""


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key, password=_no_passphrase)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _diagnose(cert: Path, key: Path, exc: OSError) -> TLSFilesError:
    """Which file made ``load_cert_chain`` fail: OpenSSL's own text ("PEM lib") names neither."""
    files: tuple[tuple[Literal["cert", "key"], Path], ...] = (("cert", cert), ("key", key))
    for which, path in files:
        try:
            with path.open("rb"):
                pass
        except OSError as unreadable:
            return TLSFilesError(which, path, unreadable.strerror or type(unreadable).__name__)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        return TLSFilesError("cert", cert, "no PEM certificate in it")
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return TLSFilesError("key", key, "not the private key of the certificate")
    return TLSFilesError("key", key, "no PEM private key in it (or an encrypted one)")


class ReloadingTLS:
    """The listening context (:attr:`listening`) and the newest context built from the files.

    :class:`TLSFilesError` when the files cannot be used at start; later, a reload that fails keeps
    the current context."""

    def __init__(
        self, cert: str | os.PathLike[str], key: str | os.PathLike[str], *, interval_s: float = 5.0
    ) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self.interval_s = interval_s
        try:
            self._stamp = self._stat()
            self.current = _server_context(self.cert, self.key)
            self.listening = _server_context(self.cert, self.key)
        except OSError as exc:  # ssl.SSLError is one too
            raise _diagnose(self.cert, self.key, exc) from None
        self._checked = time.monotonic()
        self.reloads = 0
        self.listening.sni_callback = self._on_client_hello

    def _stat(self) -> _Stamp:
        a, b = self.cert.stat(), self.key.stat()
        return (a.st_mtime_ns, a.st_size, a.st_ino), (b.st_mtime_ns, b.st_size, b.st_ino)

    def maybe_reload(self) -> bool:
        """Reload if the interval has passed and the files changed; True when a new context is in use."""
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return False
        self._checked = now
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            ctx = _server_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("tls reload failed; keeping the current certificate", error=repr(exc))
            return False
        self.current, self._stamp = ctx, stamp
        self.reloads += 1
        log.info("tls certificate reloaded", cert=str(self.cert))
        return True

    def _on_client_hello(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        try:
            self.maybe_reload()
            sslobj.context = self.current
        except Exception as exc:  # never fail a handshake over a reload problem
            log.warning("tls context switch failed", error=repr(exc))
        return None

    def uvicorn_factory(self) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
        """For ``uvicorn.Config(ssl_context_factory=...)``."""

        def factory(_config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return self.listening

        return factory


def uvicorn_config(
    app: Any,
    *,
    host: str,
    port: int,
    cert: Path | None,
    key: Path | None,
    reload_interval_s: float = 5.0,
    log_level: str = "info",
    factory: bool = False,
) -> Any:
    """A uvicorn Config for the webhook: TLS from reloading files when ``cert``/``key`` are set,
    no access log (the decision log records every review), keep-alive long enough for the API
    server's connection reuse. :class:`TLSFilesError` when ``cert``/``key`` cannot be used."""
    import uvicorn

    kwargs: dict[str, Any] = {}
    if cert is not None and key is not None:
        tls = ReloadingTLS(cert, key, interval_s=reload_interval_s)
        kwargs = {
            "ssl_certfile": str(cert),
            "ssl_keyfile": str(key),
            "ssl_context_factory": tls.uvicorn_factory(),
        }
    return uvicorn.Config(
        app,
        factory=factory,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        timeout_keep_alive=30,
        **kwargs,
    )
