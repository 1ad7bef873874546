"""``qcdr admission check``: manifests (multi-document files, directories) checked offline against
the Pod Security Standards with the webhook's engine; exit 1 on violations, 2 on unreadable input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from qcdr.cli import app

runner = CliRunner()

SECURE_CONTAINER: dict[str, Any] = {
    "name": "web",
    "image": "registry.example/web:1",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]},
    },
}


def deployment(name: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{**SECURE_CONTAINER, **container}]}}},
    }


def write(path: Path, *docs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))
    return path


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def test_clean_manifests_exit_0(tmp_path: Path) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": []}}
    write(tmp_path / "app.yaml", deployment("web"), service)
    result = runner.invoke(app, ["admission", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"allowed  {tmp_path / 'app.yaml'}  Deployment/web" in result.stdout
    assert (
        "1 workloads checked at restricted latest: 1 allowed, 0 denied; 1 other objects skipped"
        in result.stdout
    )


def test_violations_exit_1_and_json_lines(tmp_path: Path) -> None:
    privileged_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "debug"},
        "spec": {"containers": [{"name": "sh", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "backup"},
        "spec": {
            "schedule": "0 * * * *",
            "jobTemplate": {
                "spec": {"template": {"spec": {"hostNetwork": True, "containers": [SECURE_CONTAINER]}}}
            },
        },
    }
    write(tmp_path / "a.yaml", privileged_pod, cron)
    write(tmp_path / "nested/deeper/b.yml", deployment("api"))
    write(tmp_path / ".hidden/c.yaml", privileged_pod)  # hidden directories are not walked
    result = runner.invoke(app, ["admission", "check", str(tmp_path), "--level", "baseline", "--json"])
    assert result.exit_code == 1, result.output
    assert lines(result.stdout) == [
        {
            "file": str(tmp_path / "a.yaml"),
            "kind": "Pod",
            "name": "debug",
            "allowed": False,
            "violations": ["privileged"],
            "messages": ['container "sh" must not run privileged (securityContext.privileged=true)'],
        },
        {
            "file": str(tmp_path / "a.yaml"),
            "kind": "CronJob",
            "name": "backup",
            "allowed": False,
            "violations": ["hostNamespaces"],
            "messages": ["pod must not share host namespaces (hostNetwork=true)"],
        },
        {
            "file": str(tmp_path / "nested/deeper/b.yml"),
            "kind": "Deployment",
            "name": "api",
            "allowed": True,
            "violations": [],
            "messages": [],
        },
    ]
    human = runner.invoke(app, ["admission", "check", str(tmp_path / "a.yaml")])
    assert human.exit_code == 1
    assert "DENIED" in human.stdout
    assert "  - privileged: " in human.stdout
    assert "  - allowPrivilegeEscalation: " in human.stdout  # restricted by default


def test_levels_and_versions(tmp_path: Path) -> None:
    capable = write(
        tmp_path / "caps.yaml",
        deployment(
            "caps",
            securityContext={**SECURE_CONTAINER["securityContext"], "capabilities": {"add": ["CHOWN"]}},
        ),
    )
    baseline = runner.invoke(app, ["admission", "check", str(capable), "--level", "baseline", "--json"])
    assert baseline.exit_code == 0
    restricted = runner.invoke(app, ["admission", "check", str(capable), "--json"])
    assert restricted.exit_code == 1
    assert lines(restricted.stdout)[0]["violations"] == ["capabilities_restricted"]
    # before v1.22 restricted used the baseline capability rule, which allows CHOWN
    old = runner.invoke(app, ["admission", "check", str(capable), "--version", "v1.21", "--json"])
    assert old.exit_code == 0, old.output
    bad_version = runner.invoke(app, ["admission", "check", str(capable), "--version", "v1.99"])
    assert bad_version.exit_code == 2
    assert "known are latest and v1.0 … v1.37" in bad_version.stderr
    bad_level = runner.invoke(app, ["admission", "check", str(capable), "--level", "strict"])
    assert bad_level.exit_code == 2
    assert "--level must be baseline or restricted" in bad_level.stderr


def test_kubectl_lists_are_expanded(tmp_path: Path) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [deployment("one"), deployment("two", image="registry.example/other:2")],
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(listing))
    result = runner.invoke(app, ["admission", "check", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert [doc["name"] for doc in lines(result.stdout)] == ["one", "two"]


def test_unreadable_input_exits_2_with_the_reason(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["admission", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert "nope.yaml: no such file or directory" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Pod\nspec: [unclosed\n")
    result = runner.invoke(app, ["admission", "check", str(broken)])
    assert result.exit_code == 2
    assert "broken.yaml: not valid YAML at line 3, column 1" in result.stderr
    malformed = write(
        tmp_path / "malformed.yaml",
        deployment("ok"),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "bad"},
            "spec": {"template": {"spec": {"containers": {"name": "x"}}}},
        },
        ["not", "an", "object"],
    )
    result = runner.invoke(app, ["admission", "check", str(malformed), "--json"])
    assert result.exit_code == 2
    assert [doc["name"] for doc in lines(result.stdout)] == ["ok"]  # the readable ones are still reported
    assert (
        "document 2 (Deployment/bad): malformed: spec.template.spec.containers: expected a list, got dict"
        in result.stderr
    )
    assert "document 3 is not a Kubernetes object (list)" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["admission", "check", str(empty)])
    assert result.exit_code == 2
    assert "no .yaml, .yml, .json files" in result.stderr


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("2024-02-30", "timestamp"),
        ("2024-13-01", "timestamp"),
        ("!!timestamp soon", "timestamp"),
        ("!!float s3cr3t-value", "float"),
        ("!!int s3cr3t-value", "int"),
        ("!!bool s3cr3t-value", "bool"),
    ],
)
def test_a_value_yaml_cannot_build_is_one_line_and_the_other_files_are_checked(
    tmp_path: Path, value: str, kind: str
) -> None:
    """PyYAML resolves these scalars (an impossible date, an explicit tag) but raises a bare
    ValueError/AttributeError/KeyError building them, not a YAMLError: the check died with a
    traceback. Now it is the file's one-line error, with the position and without the value."""
    bad = tmp_path / "a-bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n"
        f"    released: {value}\nspec:\n  containers: []\n"
    )
    write(tmp_path / "b-good.yaml", deployment("fine"))
    result = runner.invoke(app, ["admission", "check", str(tmp_path), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"qcdr: error: {bad}: not valid YAML at line 6, column 15: not a valid {kind} value\n"
    )
    assert [doc["name"] for doc in lines(result.stdout)] == ["fine"]  # the other files still checked
    assert "s3cr3t" not in result.output + result.stderr
