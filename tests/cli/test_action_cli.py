"""``qcdr action`` against a running response service (uvicorn on 127.0.0.1, the real PostgreSQL
and Redis, the Kubernetes API test server): run, list, show, approve, renew, undo, catalog, and
clear errors with a non-zero exit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from qcdr_common.api.auth import ApiAuthSettings
from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.http_handler import serve_handler
from qcdr_common.testing.k8s_server import K8sTestServer
from qcdr_response.app import create_app
from typer.testing import CliRunner

from qcdr.cli import app
from tests.response.service.conftest import committed_database_url, committed_db, response_settings

__all__ = ["committed_database_url", "committed_db"]
pytestmark = [pytest.mark.db, pytest.mark.redis, pytest.mark.integration]

TOKEN = "cli-token-0123456789abcdef"
runner = CliRunner()


@pytest.fixture
def response_url(committed_db: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[str]:
    k8s = K8sTestServer()
    with k8s.serve():
        k8s.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
            }
        )
        settings = response_settings(
            database_url=committed_db,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            consume_in_app=True,
            kubeconfig=k8s.write_kubeconfig(tmp_path / "kubeconfig"),
            actions_mode="enforce",
        )
        service = create_app(settings, auth=ApiAuthSettings(token=SecretStr(TOKEN)))
        with serve_app(service, name="response", lifespan="on") as url:
            yield url


def qcdr(url: str, *args: str, token: str | None = TOKEN) -> Any:
    env = {"QCDR_RESPONSE_URL": url, "QCDR_API_TOKEN": token or ""}
    return runner.invoke(app, ["action", *args], env=env)


def as_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def wait_state(url: str, action_id: int, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        doc: dict[str, Any] = as_json(qcdr(url, "show", str(action_id), "--json"))
        if doc["state"] == state or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def test_run_approve_renew_undo_from_the_command_line(response_url: str) -> None:
    created = as_json(
        qcdr(
            response_url,
            "run",
            "block_binary",
            "--namespace=shop",
            "--pod=web-1",
            "--binary=/tmp/miner",
            "--require-approval",
            "--lease=30m",
            "--reason=seen by hand",
            "--json",
        )
    )
    assert created["state"] == "pending"
    action_id = str(created["id"])
    listed = qcdr(response_url, "list", "--state=pending")
    assert listed.exit_code == 0
    assert "block_binary" in listed.stdout
    assert "pending" in listed.stdout
    approved = qcdr(response_url, "approve", action_id, "--note=ok")
    assert approved.exit_code == 0, approved.output
    done = wait_state(response_url, int(action_id), "succeeded")
    assert done["state"] == "succeeded"
    renewed = as_json(qcdr(response_url, "renew", action_id, "--lease=2h", "--json"))
    assert renewed["lease_expires_at"] > done["lease_expires_at"]
    undone = qcdr(response_url, "undo", action_id)
    assert undone.exit_code == 0, undone.output
    released = wait_state(response_url, int(action_id), "released")
    assert [e["event"] for e in released["audit"]][-2:] == ["intent", "undo_result"]
    shown = qcdr(response_url, "show", action_id)
    assert "released" in shown.stdout
    assert "undo_requested" in shown.stdout
    catalog = as_json(qcdr(response_url, "catalog", "--json"))
    assert "block_binary" in {e["name"] for e in catalog}


def test_process_actions_take_the_pids_start(response_url: str) -> None:
    """kill_process refuses a PID without its start (a reused PID must never be signalled); the
    start comes from the event, as ticks since boot or Tetragon's start_time."""
    base = ["run", "kill_process", "--namespace=shop", "--pod=web-1", "--container-id=" + "ab" * 32]
    bare = qcdr(response_url, *base, "--pid=4242", "--require-approval")
    assert bare.exit_code == 1
    assert "pid_start_ticks or pid_start_time" in bare.stderr
    for start in ("--pid-start-ticks=98765", "--pid-start-time=2026-12-06T02:00:00.123456Z"):
        created = as_json(qcdr(response_url, *base, "--pid=4242", start, "--require-approval", "--json"))
        assert created["state"] == "pending"
        assert created["target"]["pid"] == 4242
        key, value = start.removeprefix("--").split("=")
        field = key.replace("-", "_")
        assert str(created["target"][field]).replace("+00:00", "Z") == value
    named = as_json(
        qcdr(
            response_url,
            *base,
            "--container=web",
            "--pod-uid=" + "0" * 8 + "-0000-4000-8000-" + "0" * 12,
            "--pid=7",
            "--pid-start-ticks=1",
            "--require-approval",
            "--json",
        )
    )
    assert named["target"]["container"] == "web"


def test_errors_are_clear_and_exit_non_zero(response_url: str, tmp_path: Path) -> None:
    missing = qcdr(response_url, "run", "block_binary", "--namespace=shop", "--pod=web-1")
    assert missing.exit_code == 1
    assert "HTTP 422 (invalid_action)" in missing.stderr
    assert "binary" in missing.stderr
    unknown = qcdr(response_url, "show", "999999")
    assert unknown.exit_code == 1
    assert "action_not_found" in unknown.stderr
    no_token = qcdr(response_url, "list", token=None)
    assert no_token.exit_code == 1
    assert "QCDR_API_TOKEN" in no_token.stderr
    wrong = qcdr(response_url, "list", token="not-the-token-0123456789")
    assert wrong.exit_code == 1
    assert "HTTP 401" in wrong.stderr
    assert "not-the-token" not in wrong.output
    down = qcdr("http://127.0.0.1:9", "list")
    assert down.exit_code == 1
    assert "cannot reach the response service" in down.stderr
    bad_param = qcdr(response_url, "run", "label_pod", "--param", "novalue")
    assert bad_param.exit_code == 2


@contextmanager
def answering(status: int, body: bytes, content_type: str) -> Iterator[str]:
    """A server that answers every request with ``body``: something other than the service."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url


@pytest.mark.parametrize("status", [200, 502])
def test_an_answer_that_is_not_json_is_one_line(status: int) -> None:
    """--url naming something other than the response service (a proxy's error page, another web
    server): one line saying so, not a JSONDecodeError traceback or the whole HTML page."""
    page = b"<html>\n<head><title>Bad Gateway</title></head>\n<body>[/nginx]</body>\n</html>\n"
    with answering(status, page, "text/html") as url:
        result = qcdr(url, "list")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if status == 200:
        assert f"{url} answered HTTP 200 but not with JSON" in result.stderr
    else:  # "[/nginx]" was a Rich closing tag: MarkupError
        assert (
            "HTTP 502: <html> <head><title>Bad Gateway</title></head> <body>[/nginx]</body>" in result.stderr
        )


def test_what_the_service_returns_is_printed_as_it_is() -> None:
    """A path such as /data/[/x] (the user's own input, echoed) is text, not Rich markup."""
    item = {
        "id": 7,
        "action": "quarantine_file",
        "state": "succeeded",
        "dry_run": False,
        "target": {"namespace": "shop", "pod": "web-1", "path": "/data/[/x]"},
        "finding_id": None,
        "lease_expires_at": None,
    }
    with answering(200, orjson.dumps({"items": [item]}), "application/json") as url:
        result = qcdr(url, "list")
    assert result.exit_code == 0, result.output
    assert "path=/data/[/x]" in result.stdout


def test_a_token_file_that_cannot_be_used_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "token"
    binary.write_bytes(b"\xff\xfe" + TOKEN.encode())
    result = runner.invoke(
        app, ["action", "list", "--url", "http://127.0.0.1:9", "--token-file", str(binary)]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"the token file {binary} is not UTF-8 text (byte 0)" in result.stderr
    missing = tmp_path / "absent"
    result = runner.invoke(
        app, ["action", "list", "--url", "http://127.0.0.1:9", "--token-file", str(missing)]
    )
    assert result.exit_code == 1
    assert f"cannot read the token file {missing}: No such file or directory" in result.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1", "Invalid port: ':1'"),
        ("http://response:abc", "Invalid port: 'abc'"),
        ("http://ops:s3cret-pass@[x]", "Invalid IPv6 address: '[x]'"),
        ("127.0.0.1:8103", "not an http(s) URL with a host"),
    ],
)
@pytest.mark.parametrize("through", ["--url", "QCDR_RESPONSE_URL"])
def test_a_url_that_is_not_one_is_a_usage_error_in_one_line(url: str, why: str, through: str) -> None:
    """httpx.InvalidURL is no httpx.HTTPError: it escaped as a traceback. The URL is checked once,
    before anything is sent, and its user-info never shown."""
    env = {"QCDR_API_TOKEN": TOKEN}
    args = ["action", "list"]
    if through == "--url":
        args += ["--url", url]
    else:
        env["QCDR_RESPONSE_URL"] = url
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.strip().splitlines() == [
        f"error: --url / QCDR_RESPONSE_URL {url.replace('ops:s3cret-pass', '***')}: {why}"
    ]


def test_an_unreachable_service_is_named_without_its_user_info() -> None:
    result = qcdr("http://ops:s3cret-pass@127.0.0.1:9", "list")
    assert result.exit_code == 1, result.output
    assert "cannot reach the response service at http://***@127.0.0.1:9: ConnectError" in result.stderr
    assert "s3cret" not in result.output
