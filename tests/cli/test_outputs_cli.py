"""``qcdr outputs``: list the configured sinks without their secrets, and send a test message to
one (against the local webhook receiver); bad configuration is a clear error with exit code 2."""

from __future__ import annotations

from pathlib import Path

import yaml
from qcdr_common.testing.sinks.webhook import WebhookServer
from typer.testing import CliRunner

from qcdr.cli import app

runner = CliRunner()
SECRET_PATH = "/hooks/T000/B000/very-secret-token"


def write(tmp_path: Path, outputs: list[dict[str, object]]) -> Path:
    path = tmp_path / "outputs.yaml"
    path.write_text(yaml.safe_dump({"outputs": outputs}))
    return path


def test_test_message_is_delivered_and_secrets_never_print(tmp_path: Path) -> None:
    server = WebhookServer(secret="s3cret-key-0123456789", path=SECRET_PATH)
    with server.serve() as url:
        config = write(
            tmp_path, [{"type": "webhook", "name": "soar", "url": url, "secret": "${env:HOOK_SECRET}"}]
        )
        env = {"HOOK_SECRET": "s3cret-key-0123456789", "QCDR_OUTPUTS_FILE": str(config)}
        listed = runner.invoke(app, ["outputs", "list"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "soar" in listed.stdout
        assert "webhook" in listed.stdout
        sent = runner.invoke(app, ["outputs", "test", "soar"], env=env)
        assert sent.exit_code == 0, sent.output
        assert "delivered" in sent.stdout
        [received] = server.received
        assert received.body["kind"] == "test"  # type: ignore[index]
        for output in (listed.output, sent.output):
            assert "very-secret-token" not in output
            assert "s3cret" not in output


def test_failures_and_bad_configuration(tmp_path: Path) -> None:
    down = write(
        tmp_path, [{"type": "webhook", "name": "down", "url": "http://127.0.0.1:9/x", "timeout_s": 1}]
    )
    failed = runner.invoke(app, ["outputs", "test", "down", "--config", str(down)])
    assert failed.exit_code == 1
    assert "retry" in failed.stderr
    unknown = runner.invoke(app, ["outputs", "test", "nope", "--config", str(down)])
    assert unknown.exit_code == 2
    assert "no sink named 'nope'" in unknown.stderr
    typo = write(tmp_path, [{"type": "webhook", "url": "http://127.0.0.1:9/x", "colour": "red"}])
    bad = runner.invoke(app, ["outputs", "list", "--config", str(typo)])
    assert bad.exit_code == 2
    assert "colour" in bad.stderr
    missing_env = write(tmp_path, [{"type": "slack", "webhook_url": "${env:NOT_SET_ANYWHERE}"}])
    bad = runner.invoke(app, ["outputs", "list", "--config", str(missing_env)])
    assert bad.exit_code == 2
    assert "NOT_SET_ANYWHERE is not set" in bad.stderr
    kind = write(tmp_path, [{"type": "carrier-pigeon"}])
    bad = runner.invoke(app, ["outputs", "list", "--config", str(kind)])
    assert bad.exit_code == 2
    assert "unknown type 'carrier-pigeon'" in bad.stderr


def test_a_config_that_is_not_text_is_a_usage_error(tmp_path: Path) -> None:
    binary = tmp_path / "outputs.yaml"
    binary.write_bytes(b"outputs:\n  - type: \xff\xfe\n")
    bad = runner.invoke(app, ["outputs", "list", "--config", str(binary)])
    assert bad.exit_code == 2, bad.output
    assert f"{binary}: not UTF-8 text (byte 19)" in bad.stderr
    assert bad.exception is None or isinstance(bad.exception, SystemExit)


def test_names_and_paths_are_text_not_markup(tmp_path: Path) -> None:
    """'[/x]' is a Rich closing tag: in a sink name or a path it raised MarkupError."""
    folder = tmp_path / "[/x]"
    folder.mkdir(parents=True)  # "[" holding "x]"
    config = folder / "outputs.yaml"
    config.write_text(yaml.safe_dump({"outputs": [{"type": "slack"}]}))
    bad = runner.invoke(app, ["outputs", "list", "--config", str(config)])
    assert bad.exit_code == 2, bad.output
    assert f"{config}[0] (slack): webhook_url: Field required" in bad.stderr
    good = write(tmp_path, [{"type": "webhook", "name": "soar", "url": "http://127.0.0.1:9/x"}])
    unknown = runner.invoke(app, ["outputs", "test", "[/x]", "--config", str(good)])
    assert unknown.exit_code == 2, unknown.output
    assert "no sink named '[/x]' (configured: soar)" in unknown.stderr


def test_seed_environment_variables_add_sinks(tmp_path: Path) -> None:
    env = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B1/secret-part",
        "PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef",
        "SPLUNK_HEC_URL": "https://splunk.example:8088",
        "SPLUNK_HEC_TOKEN": "12345678-1234-1234-1234-123456789012",
        "ELASTICSEARCH_URL": "https://es.example:9200",
        "QCDR_OUTPUTS_FILE": "",
    }
    listed = runner.invoke(app, ["outputs", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    for name in ("slack", "pagerduty", "splunk", "elasticsearch"):
        assert name in listed.stdout
    assert "secret-part" not in listed.output
    assert "0123456789abcdef0123456789abcdef" not in listed.output


def test_an_unloadable_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    """The CA bundle is loaded with the configuration: a missing or non-PEM file used to pass and
    then raise from the sink's constructor (a traceback from `list`, `test` and the service start)."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("splunk.example\n")
    cases = [
        (
            {"type": "splunk_hec", "url": "https://splunk.example:8088", "token": "t"},
            tmp_path / "missing.pem",
        ),
        ({"type": "elasticsearch", "url": "https://es.example:9200"}, not_pem),
    ]
    for entry, ca_file in cases:
        config = write(tmp_path, [{**entry, "ca_file": str(ca_file)}])
        for command in (["list"], ["test", str(entry["type"]).replace("_", "-")]):
            bad = runner.invoke(app, ["outputs", *command, "--config", str(config)])
            assert bad.exit_code == 2, bad.output
            assert bad.exception is None or isinstance(bad.exception, SystemExit), bad.exception
            assert f"[0] ({entry['type']}): ca_file: Value error, cannot load {ca_file}" in bad.stderr
            assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
