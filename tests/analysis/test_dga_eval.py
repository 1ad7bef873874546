"""DGA evaluation over shared/corpora/dga/labeled_domains.csv, read in place (evaluation only: the
model never saw it, and its threshold comes from held-out real site names and generated benign
names, never from the corpus).

Issue #6 goal: macro-averaged per-family TPR >= 0.90 at FPR <= 1 % on the legit names, word-list
families reported separately. The shipped model does not reach it yet (docs/DETECTION.md says why);
``test_issue_goal`` records the goal as an expected failure and the floors below guard against
regressions of what it does reach.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
from qcdr_analysis.dns import TrackerConfig
from qcdr_analysis.dns.classifier import Model, load_classifier
from qcdr_analysis.dns.evaluate import (
    DICTIONARY_FAMILIES,
    RELABELLED,
    Evaluation,
    evaluate,
    evaluate_pods,
    operating_curve,
    read,
    score,
)
from qcdr_analysis.dns.siblings import sibling_keys

# Measured with the shipped model.json (FPR 0.98 %, macro 0.879); a change that drops below these is
# a regression. The FPR half of the goal is met, so its ceiling is the goal itself.
FLOOR_NON_DICTIONARY_MACRO = 0.87
CEILING_FPR = 0.01


def corpus(shared_path: Path) -> list[tuple[str, str, str]]:
    path = shared_path / "corpora" / "dga" / "labeled_domains.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return read(path)


@pytest.fixture(scope="module")
def scores(shared_path: Path) -> npt.NDArray[np.float64]:
    return score(corpus(shared_path))


@pytest.fixture(scope="module")
def evaluation(shared_path: Path, scores: npt.NDArray[np.float64]) -> Evaluation:
    ev = evaluate(corpus(shared_path), scores=scores)
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


class _FixedScores:
    """A model stand-in whose score for a name is written in the name ("0.30.example")."""

    def score_names(self, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        scores = np.array([float(d.rsplit(".", 1)[0]) for d in domains])
        return np.zeros((len(domains), 1)), scores


def test_the_operating_curve_counts_legit_names_at_or_above_the_threshold() -> None:
    legit = [("legit", "", f"{s:.2f}.example") for s in np.linspace(0.0, 0.99, 100)]
    rows = [
        *legit,
        ("dga", "a", "0.995.example"),
        ("dga", "a", "0.50.example"),
        ("dga", "b", "0.975.example"),
        ("dga", "b", "0.965.example"),
        ("dga", "suppobox", "0.999.example"),  # dictionary: not in the macro
    ]
    model = cast(Model, _FixedScores())
    none, one, three = operating_curve(rows, (0.0, 0.01, 0.03), model)
    # no legit name at or above: of the others only family a's 0.995
    assert none.threshold > 0.99
    assert none.macro == pytest.approx((0.5 + 0.0) / 2)
    # one legit name (0.99) let through: b's 0.975 and 0.965 still miss
    assert 0.98 < one.threshold <= 0.99
    assert one.macro == pytest.approx(0.25)
    # three (0.99, 0.98, 0.97): both of b's names are caught
    assert 0.96 < three.threshold <= 0.97
    assert three.macro == pytest.approx((0.5 + 1.0) / 2)


def test_the_operating_curve_agrees_with_the_evaluation(
    shared_path: Path, evaluation: Evaluation, scores: npt.NDArray[np.float64]
) -> None:
    """At the corpus FPR the shipped threshold gives, the curve's threshold is the lowest with as
    many false positives: at most the shipped one, finding at least as much."""
    (point,) = operating_curve(corpus(shared_path), (evaluation.fpr,), scores=scores)
    assert point.threshold <= load_classifier().threshold
    assert evaluation.macro(False) <= point.macro < evaluation.macro(False) + 0.01


def test_the_per_pod_detector_meets_the_goal_at_ten_names_a_pod(shared_path: Path) -> None:
    """Not the issue's per-name gate: what the product pages on. Pods asking for 10 distinct
    names of one family in a window (a bot walking its list) raise; pods asking for 10 of the
    legit names do not (every legit name is in some pod)."""
    pods = evaluate_pods(corpus(shared_path), names_per_pod=10)
    print(f"\nper pod (10 names): FPR {pods.legit_raised}/{pods.legit_pods}, macro {pods.macro(False):.3f}")
    assert pods.legit_pods >= 500
    assert pods.fpr <= 0.01
    assert pods.macro(False) >= 0.90
    # the families whose names each read like a site are caught as variants of one seed
    by_family = {f.family: f.tpr for f in pods.families}
    assert by_family["fosniw"] == 1.0  # a counter on a word (koreasys0.com, koreasys1.com)
    assert by_family["banjori"] == 1.0  # a seed name with its head replaced


def test_no_three_legit_names_are_variants_of_one_seed(shared_path: Path) -> None:
    """All 5,519 legit names asked by one pod would still not raise as siblings: no pattern
    (counter or replaced head) covers three of them."""
    groups: dict[str, set[str]] = defaultdict(set)
    legit = [domain for label, _, domain in corpus(shared_path) if label == "legit"]
    for domain in legit:
        label, keys = sibling_keys(domain)
        for key in keys:
            groups[key].add(label)
    assert len(legit) > 5000
    assert max(len(labels) for labels in groups.values()) < TrackerConfig().min_siblings


def test_the_corrected_label_is_what_the_names_show(shared_path: Path) -> None:
    """``evaluate.RELABELLED``: chrmor's "nymaim" rows are built like Nymaim2's word pairs, not like
    Nymaim's random letters; if the corpus changes so that this no longer holds, the rule goes."""
    path = shared_path / "corpora" / "dga" / "labeled_domains.csv"
    by: dict[tuple[str, str], list[str]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by[(row["family"], row["source"].strip())].append(row["domain"])

    def shape(names: list[str]) -> tuple[float, float, set[str]]:
        labels = [n.split(".", 1)[0] for n in names]
        hyphens = sum("-" in label for label in labels) / len(labels)
        length = sum(len(label) for label in labels) / len(labels)
        return hyphens, length, {n.split(".", 1)[1] for n in names}

    for (family, source), corrected in RELABELLED.items():
        assert corrected in DICTIONARY_FAMILIES
        hyphens, length, suffixes = shape(by[(family, source)])
        words = [names for (f, _), names in by.items() if f == corrected]
        w_hyphens, w_length, w_suffixes = shape([n for names in words for n in names])
        others = [names for (f, s), names in by.items() if f == family and s != source]
        o_hyphens, o_length, o_suffixes = shape([n for names in others for n in names])
        assert suffixes <= w_suffixes  # every suffix is one the word-list family uses
        assert abs(hyphens - w_hyphens) < 0.1
        assert abs(length - w_length) < 1.5
        # and unlike the rest of the family it was labelled with
        assert o_hyphens == 0
        assert length - o_length > 4
        assert len(suffixes - o_suffixes) > 10
    rows = read(path)
    assert not any(f == "nymaim" and "-" in d for _, f, d in rows)
    assert len(read(path, relabel=False)) == len(rows)
