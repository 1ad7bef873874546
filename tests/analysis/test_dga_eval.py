"""DGA evaluation over shared/corpora/dga/labeled_domains.csv, read in place (evaluation only: the
model never saw it, and its threshold comes from held-out real site names and generated benign
names, never from the corpus).

Issue #6 goal: macro-averaged per-family TPR >= 0.90 at FPR <= 1 % on the legit names, word-list
families reported separately. The shipped model does not reach it yet (docs/DETECTION.md says why);
``test_issue_goal`` records the goal as an expected failure and the floors below guard against
regressions of what it does reach.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qcdr_analysis.dns.evaluate import Evaluation, evaluate, evaluate_pods, read

# Measured with the shipped model.json (FPR 0.94 %, macro 0.858); a change that drops below these is
# a regression. The FPR half of the goal is met, so its ceiling is the goal itself.
FLOOR_NON_DICTIONARY_MACRO = 0.85
CEILING_FPR = 0.01


def corpus(shared_path: Path) -> list[tuple[str, str, str]]:
    path = shared_path / "corpora" / "dga" / "labeled_domains.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return read(path)


@pytest.fixture(scope="module")
def evaluation(shared_path: Path) -> Evaluation:
    ev = evaluate(corpus(shared_path))
    print(f"\nlegit {ev.legit}, false positives {ev.false_positives} (FPR {ev.fpr:.4f})")
    print(f"macro TPR non-dictionary {ev.macro(False):.3f}, dictionary {ev.macro(True):.3f}")
    for f in ev.families:
        print(f"  {f.family:24s} {f.count:6d} {f.tpr:.3f}{'  (dictionary)' if f.dictionary else ''}")
    return ev


def test_floors(evaluation: Evaluation) -> None:
    assert evaluation.legit > 5000
    assert evaluation.fpr <= CEILING_FPR
    assert evaluation.macro(False) >= FLOOR_NON_DICTIONARY_MACRO
    # Hash- and random-stream families are the easy half and must stay near perfect.
    easy = {"zloader", "murofet", "newgoz", "monerodownloader", "chinad", "qadars", "emotet"}
    assert all(f.tpr >= 0.95 for f in evaluation.families if f.family in easy)


@pytest.mark.xfail(
    strict=True, reason="issue #6 goal not reached by the lexical model yet (docs/DETECTION.md)"
)
def test_issue_goal(evaluation: Evaluation) -> None:
    assert evaluation.fpr <= 0.01
    assert evaluation.macro(False) >= 0.90


def test_the_per_pod_detector_meets_the_goal_at_ten_names_a_pod(shared_path: Path) -> None:
    """Not the issue's per-name gate: what the product pages on. Pods asking for 10 distinct
    names of one family in a window (a bot walking its list) raise; pods asking for 10 of the
    legit names do not (every legit name is in some pod)."""
    pods = evaluate_pods(corpus(shared_path), names_per_pod=10)
    print(f"\nper pod (10 names): FPR {pods.legit_raised}/{pods.legit_pods}, macro {pods.macro(False):.3f}")
    assert pods.legit_pods >= 500
    assert pods.fpr <= 0.01
    assert pods.macro(False) >= 0.90
