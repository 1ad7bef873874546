"""Issue #5's acceptance on the tuning seeds after the first (test_detection_quality.py explains);
a file of its own so that the suite's workers run it beside the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.analysis.simulation import TUNING_SEEDS
from tests.analysis.simulation.acceptance import check_seed

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"tuning-{seed}") for seed in TUNING_SEEDS[1:]])
def test_precision_and_recall_per_anomaly_type(seed: int, tetragon_corpus: Path) -> None:
    check_seed(seed, tetragon_corpus)
