"""The adapter registry: one file, one adapter; the Qualys adapter reuses the normalizer."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import qcdr_ingest.events.adapters as adapters_package
from qcdr_common.registry import DuplicateRegistrationError, import_submodules
from qcdr_ingest.events.registry import ADAPTERS, AdapterError, load_adapters, register

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "findings.json"


def test_each_adapter_module_registers_exactly_one() -> None:
    registry = load_adapters()
    modules = import_submodules(adapters_package)
    assert modules, "no adapter modules found"
    origins = [registry.origin(name) for name in registry.names()]
    for module in modules:
        assert origins.count(module.__name__) == 1, f"{module.__name__} must register exactly one adapter"
    assert len(registry) == len(modules)
    assert set(registry.names()) == {"qualys", "tetragon", "falco", "dns", "hubble"}
    for adapter in registry:
        assert adapter.summary
        assert registry.origin(adapter.name).endswith("." + adapter.name)


def test_a_second_registration_of_a_name_fails() -> None:
    load_adapters()
    with pytest.raises(DuplicateRegistrationError, match="tetragon"):
        register("tetragon", "again", ADAPTERS.get("tetragon").convert, "somewhere.else")


def test_qualys_findings_use_the_normalizer() -> None:
    convert = load_adapters().get("qualys").convert
    findings = orjson.loads(EXAMPLES.read_bytes())
    good = next(f for f in findings if isinstance(f, dict) and f.get("uuid") and f.get("threatCategory"))
    event = convert(good, "c1")
    assert (event.id, event.source, event.category) == (good["uuid"], "qualys", good["threatCategory"])
    with pytest.raises(AdapterError, match="uuid is missing"):
        convert({"threatCategory": "x", "severity": 3, "timestamp": "2026-01-01T00:00:00Z"}, "c1")
    with pytest.raises(AdapterError, match="not an object"):
        convert(["x"], "c1")
