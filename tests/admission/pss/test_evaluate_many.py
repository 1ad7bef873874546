"""``evaluate_many`` (each check revision once for several levels) answers exactly what separate
``evaluate`` calls answer, over every upstream fixture pod at several versions."""

from __future__ import annotations

import pytest
import yaml
from qcdr_admission.pss import evaluate, evaluate_many, pod_spec_of
from qcdr_common.testing.plugin import shared_dir

pytestmark = pytest.mark.shared


def test_same_answers_as_separate_evaluations() -> None:
    shared = shared_dir()
    assert shared is not None, "../shared is needed (the suite finds it beside the checkout)"
    paths = sorted((shared / "corpora/pss/test/testdata").glob("*/*/*/*.yaml"))
    assert len(paths) > 500
    runs = [("baseline", "latest"), ("restricted", "latest"), ("baseline", "v1.22"), ("restricted", "v1.25")]
    for path in paths:
        found = pod_spec_of(yaml.load(path.read_text(), Loader=yaml.CSafeLoader))
        assert found is not None, path
        meta, spec = found
        assert evaluate_many(meta, spec, runs) == [evaluate(meta, spec, lv, ver) for lv, ver in runs], path
