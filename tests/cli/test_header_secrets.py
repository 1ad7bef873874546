"""A secret with a line break (a token file's second line) is refused when it is loaded, naming the
setting, and never comes back in httpx's "Illegal header value b'<the header>'" message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from qcdr_common.testing.http_handler import serve_handler
from typer.testing import CliRunner

from qcdr.cli import app

runner = CliRunner()
SECRET = "HEADERSECRET0123456789"


@contextmanager
def ok_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url


def test_action_cli_token_file_with_two_lines_is_not_printed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{SECRET}\n# rotated 2024-01-01\n")
    with ok_server() as url:
        result = runner.invoke(app, ["action", "list", "--url", url, "--token-file", str(token_file)])
    assert result.exit_code != 0
    assert SECRET not in result.output, result.output
    assert "the API token holds a line break" in result.output


def test_outputs_test_splunk_token_with_a_line_break_is_not_printed(tmp_path: Path) -> None:
    token_file = tmp_path / "hec-token"
    token_file.write_text(f"{SECRET}\nsecond-line\n")
    with ok_server() as url:
        config = tmp_path / "outputs.yaml"
        config.write_text(
            "outputs:\n  - type: splunk_hec\n    name: siem\n"
            f"    url: {url}\n    token: ${{file:{token_file}}}\n    timeout_s: 2\n"
        )
        result = runner.invoke(app, ["outputs", "test", "siem", "--config", str(config)])
    assert result.exit_code in (1, 2)
    assert SECRET not in result.output, result.output
    assert "token: holds a line break" in result.output


def test_outputs_test_elasticsearch_api_key_with_a_line_break_is_not_printed(tmp_path: Path) -> None:
    with ok_server() as url:
        config = tmp_path / "outputs.yaml"
        config.write_text(
            "outputs:\n  - type: elasticsearch\n    name: es\n"
            f"    url: {url}\n    api_key: ${{env:ES_KEY}}\n    timeout_s: 2\n"
        )
        result = runner.invoke(
            app, ["outputs", "test", "es", "--config", str(config)], env={"ES_KEY": f"{SECRET}\nx"}
        )
    assert result.exit_code in (1, 2)
    assert SECRET not in result.output, result.output
    assert "api_key: holds a line break" in result.output


def test_secrets_never_sent_as_they_are_may_end_with_a_newline() -> None:
    """An HMAC key signs and a password is base64-encoded: a trailing newline from ${env:...} breaks
    no header, so it is not refused (it was accepted before the header check existed)."""
    import pytest
    from pydantic import ValidationError
    from qcdr_response.outputs.sinks.webhook import WebhookConfig

    url = "https://hooks.example.com/abcdefghijkl"
    assert WebhookConfig(name="w", url=url, secret="hmac-key\n").secret is not None
    with pytest.raises(ValidationError, match="line breaks are not allowed"):
        WebhookConfig(name="w", url=url, headers={"X-Token": "abc\ndef"})
