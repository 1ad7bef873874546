"""The browser-test helper: Debian's Chromium through Playwright, over HTTPS with exactly the
development certificate trusted; a form filled and submitted, text read back, a screenshot."""

from __future__ import annotations

import html
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from playwright.async_api import Error as PlaywrightError
from qcdr_admission.certs import write_dev_certs  # tests may import any service
from qcdr_common.testing import browser
from qcdr_common.testing.browser import Chromium, chromium_problem, serve_https, spki_sha256
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

pytestmark = [pytest.mark.integration]

FORM = """<!doctype html><html><head><title>qcdr browser test</title></head><body>
<h1>Who is there?</h1>
<form method="get" action="/greet">
  <label for="name">Name</label> <input id="name" name="name" required>
  <button type="submit" id="send">Send</button>
</form></body></html>"""


async def form(_: Request) -> HTMLResponse:
    return HTMLResponse(FORM)


async def greet(request: Request) -> HTMLResponse:
    name = html.escape(request.query_params.get("name", ""))
    scheme = html.escape(request.url.scheme)
    return HTMLResponse(
        f"<!doctype html><html><body><p id='greeting'>Hello, {name}!</p>"
        f"<p id='scheme'>{scheme}</p></body></html>"
    )


# the helper's fixture, registered in this module by name
chromium = browser.chromium

APP = Starlette(routes=[Route("/", form), Route("/greet", greet)])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


async def test_form_over_tls_with_only_the_dev_certificate_trusted(
    chromium: Chromium, tmp_path: Path
) -> None:
    trusted = write_dev_certs(tmp_path / "trusted", ["localhost"], ip_addresses=["127.0.0.1"])
    # another development CA and key, as a stranger's server would have
    stranger = write_dev_certs(tmp_path / "stranger", ["localhost"], ip_addresses=["127.0.0.1"])
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with (
        serve_https(APP, trusted.cert, trusted.key) as url,
        serve_https(APP, stranger.cert, stranger.key) as other,
    ):
        context = await chromium.new_context(trust=[trusted.cert], viewport={"width": 800, "height": 600})
        page = await context.new_page()
        response = await page.goto(url + "/")
        assert response is not None
        assert response.ok
        assert await page.title() == "qcdr browser test"
        await page.fill("#name", "Ada <Lovelace>")
        await page.click("#send")
        await page.wait_for_url("**/greet?*")
        assert await page.text_content("#greeting") == "Hello, Ada <Lovelace>!"  # escaped, shown as text
        assert await page.text_content("#scheme") == "https"
        # the page is a secure context: the browser accepted the certificate, not merely ignored errors
        assert await page.evaluate("window.isSecureContext") is True
        await page.screenshot(path=shots / "greeting.png", full_page=True)
        assert png_size(shots / "greeting.png") == (800, 600)

        # the same browser refuses a certificate it was not told about
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            await page.goto(other + "/")
        await context.close()  # before the servers stop: Chromium holds connections open

    # without the pin, the development certificate is refused as well
    plain = await chromium.new_context()
    with serve_https(APP, trusted.cert, trusted.key) as url:
        page = await plain.new_page()
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            await page.goto(url + "/")
        await plain.close()


def test_spki_pin_matches_openssl(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to cross-check the pin (Debian's openssl package)")
    certs = write_dev_certs(tmp_path, ["localhost"])
    pubkey = subprocess.run(
        ["openssl", "x509", "-in", str(certs.cert), "-pubkey", "-noout"], check=True, capture_output=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, check=True, capture_output=True
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, check=True, capture_output=True
    ).stdout
    pin = subprocess.run(["openssl", "base64", "-A"], input=digest, check=True, capture_output=True).stdout
    assert spki_sha256(certs.cert) == pin.decode().strip()
    assert spki_sha256(certs.cert.read_bytes()) == spki_sha256(certs.cert)
    assert spki_sha256(certs.cert) != spki_sha256(certs.ca_cert)


def test_missing_chromium_is_a_failure_that_says_how_to_install_it(tmp_path: Path) -> None:
    problem = chromium_problem(tmp_path / "no-chromium")
    assert problem is not None
    assert "make test-deps" in problem
    assert chromium_problem() is None  # this machine has it (make test-deps ran)
