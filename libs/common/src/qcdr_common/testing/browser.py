"""Browser tests in headless Chromium: Debian's ``/usr/bin/chromium`` driven by Playwright, over
TLS with the development certificate trusted, and an HTTPS test server to point it at.

``playwright install`` is never run (it downloads browsers from the internet): Playwright's driver
launches the system Chromium through ``executable_path``. ``make test-deps`` installs the
``chromium`` package and ``uv sync`` the ``playwright`` Python package; without either the
:func:`chromium` fixture fails with a message saying so (a browser test that silently skips
proves nothing).

How the development certificate is trusted. Playwright cannot add a CA to Chromium, and
``ignore_https_errors`` would accept any certificate. Chromium's
``--ignore-certificate-errors-spki-list`` takes base64 SHA-256 hashes of SubjectPublicKeyInfos and
accepts a chain only when one of its certificates has such a key: pinning the serving
certificate's key trusts exactly that certificate, needs no NSS tooling (``certutil``) or database
in the profile, and leaves every other certificate checked normally. (Chromium honours the flag
only together with ``--user-data-dir``, which the persistent context Playwright launches here
always passes.) :func:`spki_sha256` computes the pin from the PEM certificate.

Use (async tests)::

    from qcdr_common.testing import browser
    from qcdr_common.testing.browser import Chromium, serve_https

    chromium = browser.chromium  # registers the fixture in the module

    async def test_page(chromium: Chromium, tmp_path: Path) -> None:
        certs = write_dev_certs(tmp_path / "certs", ["localhost"], ip_addresses=["127.0.0.1"])
        with serve_https(app, certs.cert, certs.key) as base_url:
            context = await chromium.new_context(trust=[certs.cert])
            page = await context.new_page()
            await page.goto(base_url + "/")
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
import pytest_asyncio

from qcdr_common.testing.asgi_server import serve_app

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Playwright

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "`make test-deps` installs it (Debian's chromium and chromium-driver; run as root)"
# Headless, no sandbox (containers run the tests as root, which Chromium's sandbox refuses), and
# nothing that reaches out to the internet on its own (component updates, sync, QUIC probes).
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def spki_sha256(cert_pem: Path | bytes) -> str:
    """Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the form Chromium's
    ``--ignore-certificate-errors-spki-list`` and HPKP pins take."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    data = cert_pem.read_bytes() if isinstance(cert_pem, Path) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def chromium_problem(executable: Path = CHROMIUM) -> str | None:
    """Why a browser test cannot run here (None: it can)."""
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        return f"{executable} is missing: {INSTALL_HINT}"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: `uv sync --all-packages --all-groups` installs it"
    return None


class Chromium:
    """Launches headless Chromium contexts, each with a fresh profile (user-data dir) under
    ``root``; :meth:`close` ends them all."""

    def __init__(self, playwright: Playwright, root: Path, executable: Path = CHROMIUM) -> None:
        self._playwright = playwright
        self.root = root
        self.executable = executable
        self._contexts: list[BrowserContext] = []

    async def new_context(self, *, trust: Sequence[Path] = (), **options: Any) -> BrowserContext:
        """A new browser (persistent context on a new, empty profile) that accepts the TLS
        certificates in ``trust`` (PEM files of serving certificates: their keys are pinned) and
        checks every other certificate as usual. ``options`` go to Playwright
        (``viewport``, ``locale``, ...)."""
        profile = self.root / f"profile-{len(self._contexts)}"
        profile.mkdir(parents=True)
        args = list(CHROMIUM_ARGS)
        if trust:
            args.append("--ignore-certificate-errors-spki-list=" + ",".join(spki_sha256(p) for p in trust))
        context = await self._playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(self.executable),
            headless=True,
            args=args,
            ignore_https_errors=False,
            **options,
        )
        self._contexts.append(context)
        return context

    async def close(self) -> None:
        for context in reversed(self._contexts):
            await context.close()
        self._contexts.clear()


@pytest_asyncio.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    """A :class:`Chromium` launcher for the test (fails when Chromium or Playwright is missing)."""
    problem = chromium_problem()
    if problem is not None:
        pytest.fail(f"browser tests need headless Chromium: {problem}", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launcher = Chromium(playwright, tmp_path / "chromium")
        try:
            yield launcher
        finally:
            await launcher.close()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


@contextmanager
def serve_https(
    app: Callable[..., Any],
    cert: Path,
    key: Path,
    *,
    name: str = "https-test-server",
    lifespan: Literal["on", "off", "auto"] = "off",
    startup_timeout_s: float = 10.0,
) -> Iterator[str]:
    """Run ``app`` over HTTPS on 127.0.0.1 (a free port) in a thread until the block ends; yields
    ``https://127.0.0.1:PORT`` (the certificate must name IP 127.0.0.1).

    Close the browser contexts that used the server before the block ends: Chromium keeps
    connections open (and half-open after a refused handshake), and a server stopped under them
    leaves sockets that are collected unclosed (a ResourceWarning, an error under
    ``filterwarnings = error``)."""
    with serve_app(
        app, name=name, lifespan=lifespan, startup_timeout_s=startup_timeout_s, tls=(cert, key)
    ) as url:
        yield url
