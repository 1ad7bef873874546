"""The committed ATT&CK table is exactly what scripts/generate_attack_table.py makes from MITRE's data."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from qcdr_analysis import attack
from qcdr_common.testing.plugin import shared_dir

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_attack_table", ROOT / "scripts/generate_attack_table.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_equals_the_generated_one() -> None:
    shared = shared_dir()
    # no skip: the corpus is part of the test environment, and a silent skip would let the table rot
    assert shared is not None, "../shared is missing: the ATT&CK corpus is required for this test"
    corpus = shared / "corpora" / "mitre-attack"
    assert (corpus / "enterprise_techniques_v18.1.csv").is_file(), f"ATT&CK corpus missing in {corpus}"
    generator = _generator()
    committed = (ROOT / "services/analysis/src/qcdr_analysis/attack/techniques_v18_1.json").read_text("utf-8")
    assert committed == generator.render(generator.build(corpus)), (
        "techniques_v18_1.json is stale: uv run python scripts/generate_attack_table.py"
    )


def test_lookups() -> None:
    assert attack.table().version == "18.1"
    shell = attack.technique("T1059.004")
    assert shell is not None
    assert shell.name == "Unix Shell"
    assert shell.subtechnique
    assert shell.current
    assert shell.parent_id == "T1059"
    assert attack.name("T1611") == "Escape to Host"
    parent = attack.parent("T1059.004")
    assert parent is not None
    assert parent.name == "Command and Scripting Interpreter"
    assert attack.parent("T1059") is None
    assert [t.id for t in attack.tactics("T1611")] == ["TA0004"]
    assert {t.shortname for t in attack.tactics("T1053")} == {
        "execution",
        "persistence",
        "privilege-escalation",
    }
    assert attack.technique("T9999") is None
    assert attack.name("T9999") is None
    assert attack.tactics("T9999") == ()
    revoked = attack.technique("T1002")
    assert revoked is not None
    assert revoked.revoked
    assert not revoked.current
    assert len(attack.table().techniques) == 835
    assert "Containers" in attack.table().techniques["T1611"].platforms
