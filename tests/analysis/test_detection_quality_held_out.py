"""Issue #5's acceptance on the HELD-OUT seed (never run while tuning): the same check as
test_detection_quality.py, in a file of its own so the seeds share the suite's workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.analysis.simulation import HELD_OUT_SEED
from tests.analysis.simulation.acceptance import check_seed

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_held_out_seed_precision_and_recall(tetragon_corpus: Path) -> None:
    check_seed(HELD_OUT_SEED, tetragon_corpus)
