"""The outputs configuration and `qcdr outputs test` never print a secret: not from a YAML error on
the line that holds it, not when a receiver echoes the webhook path it was called on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from qcdr_common.testing.http_handler import serve_handler
from typer.testing import CliRunner

from qcdr.cli import app

runner = CliRunner()
SECRET = "SECRETSECRET0123"
SLACK_PATH = f"/services/T000/B000/{SECRET}"


def test_yaml_syntax_error_in_outputs_file_does_not_echo_the_secret_line(tmp_path: Path) -> None:
    # a literal webhook URL in a mounted Secret file, with a YAML typo on the same line
    config = tmp_path / "outputs.yaml"
    config.write_text(
        f"outputs:\n  - type: slack\n    webhook_url: https://hooks.slack.com{SLACK_PATH}: oops\n"
    )
    result = runner.invoke(app, ["outputs", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert SECRET not in result.output, result.output
    assert "at line 3, column" in result.output  # where, still


def test_yaml_tab_error_does_not_echo_a_routing_key(tmp_path: Path) -> None:
    key = "R0UTINGKEY" + "x" * 22
    config = tmp_path / "outputs.yaml"
    config.write_text(f"outputs:\n  - type: pagerduty\n    routing_key: {key}\t: x\n")
    result = runner.invoke(app, ["outputs", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert key not in result.output, result.output


@contextmanager
def echo_404_server() -> Iterator[str]:
    """A receiver that answers like Express' default 404 page: it names the path it was asked for."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = f"Cannot POST {self.path}".encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url


def test_outputs_test_does_not_print_a_webhook_path_echoed_by_the_receiver(tmp_path: Path) -> None:
    with echo_404_server() as base:
        config = tmp_path / "outputs.yaml"
        config.write_text("outputs:\n  - type: slack\n    name: chat\n    webhook_url: ${env:SLACK_HOOK}\n")
        result = runner.invoke(
            app, ["outputs", "test", "chat", "--config", str(config)], env={"SLACK_HOOK": base + SLACK_PATH}
        )
    assert result.exit_code == 1
    assert "rejected" in result.output
    assert SECRET not in result.output, result.output
