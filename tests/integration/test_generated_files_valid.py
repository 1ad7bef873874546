"""Every file ``qcdr run`` writes validates against the upstream schemas (strict, ``cidr`` format
checked) and the semantic validator, for every action."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from qcdr_common.testing.schemas import ManifestValidator
from qcdr_ingest.qualys.demo_data import generate_findings
from qcdr_response.policies.targets import CiliumTarget, TetragonTarget
from qcdr_response.policies.validator_cilium import validate_cilium_policy
from qcdr_response.policies.validator_tetragon import validate_tracing_policy
from typer.testing import CliRunner

from qcdr.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.shared]


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "findings.jsonl"
    items = generate_findings(3000, seed=11, now=datetime.now(UTC))
    path.write_bytes(b"\n".join(orjson.dumps(i) for i in items) + b"\n")
    return path


@pytest.mark.parametrize("action", ["Post", "Sigkill", "Override"])
@pytest.mark.parametrize(("tetragon", "kernel"), [("1.4", "5.10"), ("1.7", "6.8")])
def test_all_files_validate(
    action: str, tetragon: str, kernel: str, events_file: Path, tmp_path: Path, shared_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--once",
            "--events-file",
            str(events_file),
            "--output",
            str(out),
            "--action",
            action,
            "--tetragon-version",
            tetragon,
            "--kernel",
            kernel,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert not [r for r in report["refusals"] if r["outcome"] == "dropped"]
    validator = ManifestValidator(shared_path)
    target_t, target_c = TetragonTarget(version=tetragon, kernel=kernel), CiliumTarget()
    files = sorted(out.glob("*.yaml"))
    assert len(files) >= 14
    kinds = set()
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            kinds.add(doc["kind"])
            assert validator.errors(doc) == [], f"{path.name}: {doc['metadata']['name']}"
            if doc["kind"].startswith("TracingPolicy"):
                issues = validate_tracing_policy(doc, target_t)
            else:
                issues = validate_cilium_policy(doc, target_c)
            assert [i for i in issues if i.severity == "error"] == [], (
                f"{path.name}: {doc['metadata']['name']}"
            )
    assert {"TracingPolicy", "TracingPolicyNamespaced", "CiliumClusterwideNetworkPolicy"} <= kinds


def test_rerun_is_byte_identical(events_file: Path, tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        result = CliRunner().invoke(
            app, ["run", "--once", "--events-file", str(events_file), "--output", str(out)]
        )
        assert result.exit_code == 0, result.output
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]
